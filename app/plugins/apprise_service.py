"""The ``apprise`` service: any of Apprise's notification services, by one URL (``mailto://…``,
``slack://…``, ``ntfy://…``, ``json://host:port/path``…).

The URL addresses the organization's own endpoint (no contact field). ``validate_credentials``
checks that Apprise understands the URL and that the hosts it names (its host, an e-mail service's
SMTP host) pass the network guard; a send checks them again, then notifies with
``Apprise.async_notify``. Services whose endpoint is fixed by Apprise (``tgram://``, ``slack://``…)
reach their provider's public API. Apprise connects on its own (``requests``), so the addresses
cannot be pinned as :mod:`app.plugins.transport` does for the other services: a host whose DNS
answer changes between the check and the send is a residual risk that
``VOLUBLE_ALLOW_PRIVATE_TARGETS=false`` does not fully close.

Apprise gives no receipts: ``MSG_SENT`` is final, and :meth:`ApprisePlugin.parse_webhook` refuses
every callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar
from uuid import uuid4

import apprise
import msgspec

from app.plugins.base import (
    CredentialsError,
    OutgoingMessage,
    Parsed,
    PluginContext,
    PluginInfo,
    SelfTestError,
    SendError,
    SignatureError,
    WebhookRequest,
)
from app.plugins.httpapi import clip
from app.plugins.netguard import ensure_public_host

NAME = "apprise"


class AppriseCredentials(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Annotated[
        str,
        msgspec.Meta(
            min_length=6,
            max_length=2048,
            description="One Apprise URL, e.g. mailto://user:password@example.com or ntfy://ntfy.sh/topic.",
            extra_json_schema={"writeOnly": True, "format": "password"},
        ),
    ]

    def __repr__(self) -> str:
        scheme = self.url.split("://", 1)[0] if "://" in self.url else "?"
        return f"AppriseCredentials(url={scheme}://***)"


def _asset() -> apprise.AppriseAsset:
    # no persistent cache on disk: every organization's URL is its own
    return apprise.AppriseAsset(storage_mode="memory")


def instantiate(url: str) -> Any:
    """Apprise's service object for ``url``; :class:`CredentialsError` if Apprise does not understand it."""
    if any(c.isspace() or ord(c) < 32 for c in url) or "://" not in url:
        raise CredentialsError("The Apprise URL must be one URL such as scheme://…, without spaces.")
    service = apprise.Apprise.instantiate(url, asset=_asset())
    if service is None:
        scheme = url.split("://", 1)[0][:20]
        raise CredentialsError(f"Apprise does not understand this {scheme}:// URL (unknown scheme or bad fields).")
    return service


def target_hosts(service: Any) -> list[tuple[str, int]]:
    """The ``(host, port)`` pairs a service object will connect to, as its URL names them.

    A service whose URL template has a ``host`` connects to it, except e-mail, which connects to its
    SMTP host (``?smtp=``, or derived from the address); services without one reach an endpoint that
    Apprise fixes (their URL's "host" is a token).
    """
    secure = bool(getattr(service, "secure", False))
    port = getattr(service, "port", None)
    smtp_host = getattr(service, "smtp_host", None)
    if isinstance(smtp_host, str) and smtp_host:
        return [(smtp_host.strip("[]"), int(port) if port else 25)]
    if "host" in getattr(type(service), "template_tokens", {}):
        host = str(getattr(service, "host", "") or "")
        return [(host.strip("[]"), int(port) if port else (443 if secure else 80))]
    return []


def _why(result: Any) -> str:
    """The last warning Apprise logged for a failed notification, else its status."""
    reasons = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR", "CRITICAL")]
    return clip(reasons[-1], 200) if reasons else f"Apprise status {result.status.name}."


class ApprisePlugin:
    info: ClassVar[PluginInfo] = PluginInfo(
        name=NAME,
        title="Apprise (100+ notification services)",
        address_field=None,
        credentials_type=AppriseCredentials,
        description="Notifies one Apprise URL (e-mail, chat, push…) with each message. No receipts.",
    )

    def __init__(self, context: PluginContext) -> None:
        self.context = context

    async def self_test(self) -> None:
        if apprise.Apprise.instantiate("json://localhost/self-test", asset=_asset()) is None:
            raise SelfTestError("Apprise cannot load its json:// service on this installation.")

    async def _check(self, credentials: Any) -> Any:
        if not isinstance(credentials, AppriseCredentials):
            raise CredentialsError("Apprise credentials expected.")
        service = instantiate(credentials.url)
        for host, port in target_hosts(service):
            await ensure_public_host(host, port, self.context.allow_private_targets)
        return service

    async def validate_credentials(self, credentials: Any) -> None:
        await self._check(credentials)

    async def send(self, message: OutgoingMessage, address: str | None, credentials: Any) -> str:
        try:
            service = await self._check(credentials)
        except CredentialsError as exc:
            raise SendError(str(exc)) from exc
        notifier = apprise.Apprise(asset=_asset())
        notifier.add(service)
        timeout = self.context.send_timeout
        try:
            async with asyncio.timeout(timeout):
                result = await notifier.async_notify(body=message.content, title=message.subject, timeout=timeout)
        except TimeoutError as exc:
            raise SendError(f"The Apprise service did not answer within {timeout:g} s.") from exc
        if not result:
            raise SendError(f"The {service.service_name} service did not take the notification: {_why(result)}")
        return str(uuid4())

    async def parse_webhook(self, request: WebhookRequest, credentials: Any) -> Sequence[Parsed]:
        raise SignatureError("The apprise service sends only; it receives no callbacks.")
