"""Calling a provider's HTTP API from a plugin: one guarded request, a capped answer, readable errors.

Every URL an organization can influence (a provider's ``api_base``, a webhook URL) is reached through
:func:`app.plugins.transport.guarded_transport`, so the network guard applies; redirects are not
followed and the environment's proxies are ignored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from app import __version__
from app.plugins.base import CredentialsError, PluginContext, PluginError
from app.plugins.transport import guarded_transport

#: bytes of a provider's answer that are read; the rest is ignored
MAX_ANSWER = 256 * 1024


class ProviderUnreachable(PluginError):
    """The provider did not answer (refused, timed out, unreadable); ``str(exc)`` says why."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    #: the body decoded as JSON, or None when it is not JSON (or was cut at :data:`MAX_ANSWER`)
    data: Any


def check_url(url: str) -> None:
    """Raise :class:`CredentialsError` unless ``url`` is a well-formed absolute http(s) URL."""
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise CredentialsError("The URL must not contain spaces or control characters.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise CredentialsError(f"The URL is not well-formed: {exc}.") from exc
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise CredentialsError("The URL must be an absolute http:// or https:// URL.")


def check_api_base(api_base: str) -> str:
    """``api_base`` without a trailing slash; :class:`CredentialsError` unless it is a bare http(s) origin/path."""
    check_url(api_base)
    parts = urlsplit(api_base)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise CredentialsError("The API base must be a plain http(s):// URL, without credentials, query or fragment.")
    return api_base.rstrip("/")


async def call(
    context: PluginContext,
    method: str,
    url: str,
    *,
    provider: str,
    auth: tuple[str, str] | None = None,
    data: dict[str, str] | None = None,
    json: Any = None,
    redact: str | None = None,
) -> Answer:
    """One request to a provider's API.

    Raises :class:`CredentialsError` when the network guard refuses the host, and
    :class:`ProviderUnreachable` when there is no answer; any HTTP status is returned. ``redact`` (a
    secret that is part of the URL, such as a bot token) never appears in an error message.
    """
    timeout = context.send_timeout
    headers = {"User-Agent": f"Voluble/{__version__}", "Accept": "application/json"}
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(
                transport=guarded_transport(context.allow_private_targets),
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
                trust_env=False,
            ) as client,
            client.stream(method, url, auth=auth, data=data, json=json, headers=headers) as response,
        ):
            body = bytearray()
            cut = False
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER:
                    cut = True
                    break
            status = response.status_code
    except CredentialsError:
        raise
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise ProviderUnreachable(f"{provider} did not answer within {timeout:g} s.") from exc
    except (httpx.HTTPError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if redact:
            reason = reason.replace(redact, "***")
        raise ProviderUnreachable(f"Cannot reach {provider}: {reason}") from exc
    decoded: Any = None
    if body and not cut:
        try:
            decoded = msgspec.json.decode(bytes(body))
        except msgspec.DecodeError:
            decoded = None
    return Answer(status=status, body=bytes(body[:MAX_ANSWER]), data=decoded)


def clip(text: object, limit: int = 300) -> str:
    """A provider-supplied string, one line, at most ``limit`` characters."""
    value = " ".join(str(text).split())
    return value if len(value) <= limit else value[: limit - 1] + "…"
