"""The plugin protocol: what a service (SMS, email, webhook, …) declares and implements.

A plugin is a class registered under the entry-point group ``voluble.plugins``. It is constructed
with a :class:`PluginContext` and declares its metadata as a class attribute ``info``.

Two-way services add, all optional and backward compatible (a plugin that ignores them works as before):

- ``PluginInfo.accepted_state``: the state a message reaches when :meth:`Plugin.send` returns —
  ``MSG_SENT`` (the default), or ``MSG_DELIVERED_SERVICE`` for a service whose acceptance already is
  delivery to an intermediary (Telegram).
- ``PluginInfo.webhook_answer`` / ``webhook_answer_type``: what the hook endpoint answers (200) to a
  callback the plugin accepted (Twilio: an empty TwiML ``<Response/>``, ``text/xml``).
- ``async def prepare_credentials(credentials, organization_id) -> credentials``
  (:class:`PreparesCredentials`): called by the host through :func:`prepare_credentials` after
  :meth:`Plugin.validate_credentials` passed and before the credentials are stored. The plugin
  registers what the provider needs for that organization (Telegram: its webhook) and returns the
  credentials to store, which may carry generated fields (a webhook secret, the bot's username).
- :meth:`Plugin.parse_webhook` may also return :class:`Link` items (a person asking to link their
  address to the contact a token was issued for), and raises :class:`PayloadError` for a callback it
  cannot read (too large, malformed): answered 4xx, never a 500.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable
from uuid import UUID

import msgspec

AddressField = Literal["phone", "email", "telegram_chat_id"]
#: the state a message reaches when a service accepts it
AcceptedState = Literal["MSG_SENT", "MSG_DELIVERED_SERVICE"]


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
    #: the state of a message once :meth:`Plugin.send` returned: ``MSG_DELIVERED_SERVICE`` when the
    #: provider's acceptance is delivery to an intermediary that gives no later receipts (Telegram)
    accepted_state: AcceptedState = "MSG_SENT"
    #: the provider reports later what became of a sent message (delivery receipts): a sent message's
    #: page keeps watching it for a while
    receipts: bool = False
    #: the body and content type of the answer to a callback that was accepted (Twilio expects TwiML)
    webhook_answer: bytes = b""
    webhook_answer_type: str = "text/plain"


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
    """A delivery receipt for a message the service sent earlier.

    ``MSG_FAILED`` is a late failure of the attempt that sent it (Twilio ``undelivered``/``failed``):
    the coordinator records the attempt as undelivered and moves the chain on. Every other state only
    ever moves a message forward.
    """

    provider_message_id: str
    state: Literal["MSG_SENT", "MSG_DELIVERED_SERVICE", "MSG_DELIVERED_USER", "MSG_READ", "MSG_FAILED"]
    at: datetime | None = None
    #: a reason safe to show (for ``MSG_FAILED``), e.g. ``"Twilio error 30003: Unreachable destination handset"``
    error: str | None = None
    #: the provider's error code as it sent it (``"30003"``), for the attempt's record
    error_code: str | None = None


@dataclass(frozen=True)
class Inbound:
    """A message a contact sent to the organization through the service."""

    address: str
    content: str
    provider_message_id: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class Link:
    """A person asks to link ``address`` to the contact that ``token`` was issued for.

    Telegram: ``/start <token>`` sent after opening ``https://t.me/<bot>?start=<token>``; ``address``
    is the chat id. The host sets ``address`` on that contact's ``address_field`` of the service, in
    the organization of the hook, if the token is one it issued there (else ignores it).
    """

    token: str
    address: str
    provider_message_id: str | None = None
    at: datetime | None = None


#: what :meth:`Plugin.parse_webhook` returns items of
Parsed = Receipt | Inbound | Link


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


class PayloadError(PluginError):
    """A webhook's body cannot be read: too large, not the expected encoding, malformed.

    Answered with :attr:`status_code` (4xx) and nothing changes.
    """

    status_code: int = 400


class PayloadTooLarge(PayloadError):
    status_code = 413


@runtime_checkable
class Plugin(Protocol):
    info: ClassVar[PluginInfo]

    def __init__(self, context: PluginContext) -> None: ...

    async def self_test(self) -> None:
        """Start-up health check; raise :class:`SelfTestError` (or anything) to be blacklisted."""

    async def validate_credentials(self, credentials: Any) -> None:
        """A cheap live check when an org admin saves credentials; raise :class:`CredentialsError`.

        Services that must register something for the organization (a webhook) also implement
        ``prepare_credentials`` (:class:`PreparesCredentials`), which the host calls next.
        """

    async def send(self, message: OutgoingMessage, address: str | None, credentials: Any) -> str:
        """Send and return the provider's message id; raise :class:`SendError` on failure."""
        ...

    async def parse_webhook(self, request: WebhookRequest, credentials: Any) -> Sequence[Parsed]:
        """Verify the callback's signature (raise :class:`SignatureError`) and parse it.

        Raise :class:`PayloadError` for a body it cannot read; return ``[]`` for a callback it
        understands but that changes nothing (answered 200 so the provider does not retry it).
        """
        ...


@runtime_checkable
class PreparesCredentials(Protocol):
    """The optional credentials step of a plugin that registers something with its provider."""

    async def prepare_credentials(self, credentials: Any, organization_id: UUID) -> Any:
        """Register what the provider needs for ``organization_id`` (e.g. its webhook) and return the
        credentials to store: the same type, possibly with generated fields. Raise
        :class:`CredentialsError` to refuse them. Called after :meth:`Plugin.validate_credentials`."""
        ...


async def prepare_credentials(plugin: object, credentials: Any, organization_id: UUID) -> Any:
    """What the host calls after ``validate_credentials`` passed, before storing: the credentials to store.

    The plugin's ``prepare_credentials`` when it has one, else ``credentials`` unchanged (every
    plugin written before it existed).
    """
    prepare = getattr(plugin, "prepare_credentials", None)
    if prepare is None:
        return credentials
    prepared = await prepare(credentials, organization_id)
    if prepared is None:
        return credentials
    if credentials is not None and not isinstance(prepared, type(credentials)):
        raise TypeError(f"prepare_credentials returned a {type(prepared).__name__}, not a {type(credentials).__name__}")
    return prepared
