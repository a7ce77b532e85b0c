"""The ``webhook`` service: a signed JSON POST of the message and its contact to the organization's URL.

The request::

    POST <url>
    Content-Type: application/json
    X-Voluble-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>
    X-Voluble-Message-Id: <message id>

    {"message": {"id", "organization_id", "subject", "content", "reply_to_provider_id"},
     "contact": {"id", "title", "first_name", "surname", "phone", "email", "telegram_chat_id"},
     "sent_at": "<ISO 8601 UTC>"}

The receiver verifies the signature over the exact bytes it received (and may reject stale
``sent_at`` values to stop replays). A 2xx answer means sent; the provider message id is the ``id``
of a JSON object answer, else a generated uuid. Anything else — another status (redirects are not
followed), a timeout, a refused connection — fails the attempt.

This service only sends: it receives no callbacks, so :meth:`WebhookPlugin.parse_webhook` always
raises :class:`SignatureError` (answered 403).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from uuid import uuid4

import httpx
import msgspec

from app import __version__
from app.plugins.base import (
    CredentialsError,
    Inbound,
    OutgoingMessage,
    PluginContext,
    PluginInfo,
    Receipt,
    SelfTestError,
    SendError,
    SignatureError,
    WebhookRequest,
)
from app.plugins.httpapi import check_url as _check_url
from app.plugins.netguard import ensure_public_url
from app.plugins.transport import guarded_transport

SIGNATURE_HEADER = "X-Voluble-Signature"
MAX_RESPONSE = 64 * 1024


class WebhookCredentials(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Annotated[
        str,
        msgspec.Meta(
            min_length=10, max_length=2048, description="The http(s):// URL that receives each message as a POST."
        ),
    ]
    secret: Annotated[
        str,
        msgspec.Meta(
            min_length=16,
            max_length=256,
            description="Shared secret of the HMAC-SHA256 signature (at least 16 characters).",
            extra_json_schema={"writeOnly": True, "format": "password"},
        ),
    ]

    def __repr__(self) -> str:
        return f"WebhookCredentials(url={self.url!r}, secret=***)"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Voluble-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """What a receiver does: compare the signature of the raw body in constant time."""
    return hmac.compare_digest(sign(secret, body), signature)


class WebhookPlugin:
    info: ClassVar[PluginInfo] = PluginInfo(
        name="webhook",
        title="Webhook (signed HTTP POST)",
        address_field=None,
        credentials_type=WebhookCredentials,
        description="POSTs each message and its contact as JSON to your URL, signed with HMAC-SHA256.",
    )

    def __init__(self, context: PluginContext) -> None:
        self.context = context

    async def self_test(self) -> None:
        if not verify("self-test-secret", b"{}", sign("self-test-secret", b"{}")):
            raise SelfTestError("HMAC-SHA256 does not work on this installation.")
        try:
            transport = guarded_transport(self.context.allow_private_targets)
        except Exception as exc:
            raise SelfTestError(f"Cannot build the guarded HTTP transport: {exc}") from exc
        await transport.aclose()

    async def validate_credentials(self, credentials: Any) -> None:
        if not isinstance(credentials, WebhookCredentials):
            raise CredentialsError("Webhook credentials expected.")
        _check_url(credentials.url)
        await ensure_public_url(credentials.url, self.context.allow_private_targets)

    @staticmethod
    def payload(message: OutgoingMessage) -> bytes:
        contact = message.contact
        return msgspec.json.encode(
            {
                "message": {
                    "id": str(message.id),
                    "organization_id": str(message.organization_id),
                    "subject": message.subject,
                    "content": message.content,
                    "reply_to_provider_id": message.reply_to_provider_id,
                },
                "contact": {
                    "id": str(contact.id),
                    "title": contact.title,
                    "first_name": contact.first_name,
                    "surname": contact.surname,
                    "phone": contact.phone,
                    "email": contact.email,
                    "telegram_chat_id": contact.telegram_chat_id,
                },
                "sent_at": datetime.now(UTC).isoformat(),
            }
        )

    async def send(self, message: OutgoingMessage, address: str | None, credentials: Any) -> str:
        if not isinstance(credentials, WebhookCredentials):
            raise SendError("The organization has no webhook credentials.")
        try:
            _check_url(credentials.url)
        except CredentialsError as exc:
            raise SendError(str(exc)) from exc
        body = self.payload(message)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"Voluble/{__version__}",
            SIGNATURE_HEADER: sign(credentials.secret, body),
            "X-Voluble-Message-Id": str(message.id),
        }
        timeout = self.context.send_timeout
        try:
            async with (
                asyncio.timeout(timeout),
                httpx.AsyncClient(
                    transport=guarded_transport(self.context.allow_private_targets),
                    timeout=httpx.Timeout(timeout),
                    follow_redirects=False,
                    trust_env=False,
                ) as client,
                client.stream("POST", credentials.url, content=body, headers=headers) as response,
            ):
                answer = bytearray()
                async for chunk in response.aiter_bytes():
                    answer += chunk
                    if len(answer) > MAX_RESPONSE:
                        break
                status = response.status_code
        except CredentialsError as exc:
            raise SendError(str(exc)) from exc
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise SendError(f"The webhook did not answer within {timeout:g} s.") from exc
        except httpx.HTTPError as exc:
            raise SendError(f"Cannot reach the webhook: {exc or type(exc).__name__}") from exc
        except OSError as exc:
            raise SendError(f"Cannot reach the webhook: {exc.strerror or exc}") from exc
        if not 200 <= status < 300:
            raise SendError(f"The webhook answered HTTP {status}.")
        return _provider_id(bytes(answer)) or str(uuid4())

    async def parse_webhook(self, request: WebhookRequest, credentials: Any) -> list[Receipt | Inbound]:
        raise SignatureError("The webhook service sends only; it receives no callbacks.")


def _provider_id(answer: bytes) -> str | None:
    if not answer or len(answer) > MAX_RESPONSE:
        return None
    try:
        data = msgspec.json.decode(answer)
    except msgspec.DecodeError:
        return None
    if isinstance(data, dict):
        value = data.get("id")
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()[:200]
    return None
