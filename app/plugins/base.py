"""The plugin protocol: what a service (SMS, email, webhook, …) declares and implements.

A plugin is a class registered under the entry-point group ``voluble.plugins``. It is constructed
with a :class:`PluginContext` and declares its metadata as a class attribute ``info``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable
from uuid import UUID

import msgspec

AddressField = Literal["phone", "email", "telegram_chat_id"]


@dataclass(frozen=True)
class PluginInfo:
    name: str
    title: str
    #: the contact field the plugin sends to; None for services addressing the organization's own endpoint
    address_field: AddressField | None
    #: msgspec type of the per-organization credentials; None when the service needs none
    credentials_type: type[msgspec.Struct] | None = None
    #: longest content the service accepts (characters); None = unlimited
    max_length: int | None = None
    #: sends per second the provider allows per organization; None = unlimited
    rate_per_second: float | None = None
    description: str = ""


@dataclass(frozen=True)
class PluginContext:
    """What the host gives a plugin: where it may write, and the network policy."""

    var_dir: Path
    allow_private_targets: bool = False
    public_url: str = "http://127.0.0.1:8000"
    send_timeout: float = 30.0


@dataclass(frozen=True)
class ContactInfo:
    id: UUID
    title: str | None = None
    first_name: str | None = None
    surname: str | None = None
    phone: str | None = None
    email: str | None = None
    telegram_chat_id: str | None = None


@dataclass(frozen=True)
class OutgoingMessage:
    id: UUID
    organization_id: UUID
    content: str
    contact: ContactInfo
    subject: str = "Message"
    reply_to_provider_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookRequest:
    """A provider's callback, as received on ``/hooks/{service}/{organization_id}``."""

    method: str
    url: str
    headers: dict[str, str]
    query: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Receipt:
    """A delivery receipt for a message the service sent earlier."""

    provider_message_id: str
    state: Literal["MSG_DELIVERED_SERVICE", "MSG_DELIVERED_USER", "MSG_READ", "MSG_FAILED"]
    at: datetime | None = None
    error: str | None = None


@dataclass(frozen=True)
class Inbound:
    """A message a contact sent to the organization through the service."""

    address: str
    content: str
    provider_message_id: str | None = None
    at: datetime | None = None


class PluginError(Exception):
    """Base of the errors a plugin raises on purpose; ``str(exc)`` is a reason safe to show users."""


class SelfTestError(PluginError):
    """The plugin cannot work on this installation (missing dependency, bad configuration)."""


class CredentialsError(PluginError):
    """Credentials are malformed, unreachable or refused by the provider."""


class SendError(PluginError):
    """This attempt failed; the chain moves on to the next service."""


class SignatureError(PluginError):
    """A webhook's signature did not verify (answered 403, nothing changes)."""


@runtime_checkable
class Plugin(Protocol):
    info: ClassVar[PluginInfo]

    def __init__(self, context: PluginContext) -> None: ...

    async def self_test(self) -> None:
        """Start-up health check; raise :class:`SelfTestError` (or anything) to be blacklisted."""

    async def validate_credentials(self, credentials: Any) -> None:
        """A cheap live check when an org admin saves credentials; raise :class:`CredentialsError`."""

    async def send(self, message: OutgoingMessage, address: str | None, credentials: Any) -> str:
        """Send and return the provider's message id; raise :class:`SendError` on failure."""
        ...

    async def parse_webhook(self, request: WebhookRequest, credentials: Any) -> list[Receipt | Inbound]:
        """Verify the callback's signature (raise :class:`SignatureError`) and parse it."""
        ...
