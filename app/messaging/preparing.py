"""What a worker reads before its plugin calls: the attempts, their messages, contacts and organizations, and
the organizations' credentials for the services, in ONE statement built once per process.

A send job read its attempt's row through the ORM (the statement built anew, its cache key computed, the
ORM's compile and loading steps: a sixth of a worker's time per message) and then the organization's
credentials through a second query, decrypted again for every message (docs/performance.md, "Fourth
pass"). Here it is one Core SELECT with an expanding ``IN`` (any number of attempts, one compiled form),
the credentials' ciphertext outer-joined on the message's own organization and the attempt's service, and
the decrypted credentials memoized per process (:class:`CredentialsMemo`) keyed by their ciphertext: saving
new credentials changes the ciphertext, so the next send decrypts the new ones.

Tenancy: nothing here takes an organization from outside. Every row is reached from the attempt's message,
and the credentials joined are those of that message's organization (the cipher also binds each token to
its organization and service: app/plugins/crypto.py).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.contacts.models import Contact
from app.db.config import is_connection_error
from app.messaging.bulk import Event
from app.messaging.models import Attempt, AttemptOutcome, Message
from app.messaging.usable import plugin_here
from app.plugins.base import ContactInfo, OutgoingMessage, Plugin, PluginError
from app.servicehost.models import ServiceCredential
from app.servicehost.registry import PluginRegistry
from app.servicehost.services import CredentialService
from app.tenants.deps import scoped
from app.tenants.models import Organization

#: the contact's columns a plugin gets (:class:`ContactInfo`), besides its id
CONTACT_FIELDS = ("title", "first_name", "surname", "phone", "email", "telegram_chat_id")
_IDS = "prepare_attempt_ids"


@dataclass
class Send:
    """One plugin call, ready: everything read from the database beforehand."""

    attempt_id: UUID
    service: str
    plugin: Plugin
    outgoing: OutgoingMessage
    address: str | None
    credentials: Any
    blast_id: UUID | None = None


class CredentialsMemo:
    """Decrypted credentials per (organization, service, ciphertext), the ``size`` most recent, or the
    failure event of credentials that cannot be used. One per worker process (the job context's
    ``credentials``): the same ciphertext decrypts to the same credentials as long as the process lives
    (its secret keys and plugins are those it started with)."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._items: OrderedDict[tuple[UUID, str, str], Any] = OrderedDict()

    def get(self, key: tuple[UUID, str, str], decode: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = decode()
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


@functools.cache
def statement() -> Select[Any]:
    """The pending attempts among ``:prepare_attempt_ids`` with what their plugin calls need (built once:
    SQLAlchemy keeps its compiled form and cache key on this object)."""
    attempt, message, contact = Attempt.__table__.c, Message.__table__.c, Contact.__table__.c
    org, credential = Organization.__table__.c, ServiceCredential.__table__.c
    return (
        select(
            attempt.id,
            attempt.service,
            message.id.label("message_id"),
            message.organization_id,
            message.content,
            message.blast_id,
            contact.id.label("contact_id"),
            *(contact[field] for field in CONTACT_FIELDS),
            org.name.label("organization_name"),
            credential.ciphertext,
        )
        .select_from(Attempt.__table__)
        .outerjoin(Message.__table__, message.id == attempt.message_id)
        .outerjoin(Contact.__table__, contact.id == message.contact_id)
        .outerjoin(Organization.__table__, org.id == message.organization_id)
        .outerjoin(
            ServiceCredential.__table__,
            (credential.organization_id == message.organization_id) & (credential.service == attempt.service),
        )
        .where(attempt.id.in_(bindparam(_IDS, expanding=True)), attempt.outcome == AttemptOutcome.PENDING)
    )


def _decode(
    session: AsyncSession, settings: Settings, registry: PluginRegistry, key: tuple[UUID, str, str]
) -> Callable[[], Any]:
    def decode() -> Any:
        organization_id, service, ciphertext = key
        credentials = scoped(CredentialService, session, organization_id, settings=settings, registry=registry)
        try:
            return credentials.decode(service, ciphertext)
        except PluginError as exc:  # undecryptable, or no longer valid for the plugin
            return {"outcome": "failed", "reason": f"credentials unreadable: {exc}"}

    return decode


async def prepare(
    session: AsyncSession,
    attempt_ids: list[UUID],
    *,
    settings: Settings,
    registry: PluginRegistry,
    memo: CredentialsMemo,
) -> tuple[list[Send], dict[UUID, Event]]:
    """The plugin calls of the pending attempts among ``attempt_ids`` (plain columns, no ORM objects), and
    the events of those that cannot be sent. Attempts no longer pending are left out."""
    connection = await session.connection()
    rows = (await connection.execute(statement(), {_IDS: attempt_ids})).all()
    sends: list[Send] = []
    events: dict[UUID, Event] = {}
    for row in rows:
        if row.message_id is None or row.contact_id is None:
            events[row.id] = {"outcome": "failed", "reason": "message or contact no longer exists"}
            continue
        plugin = plugin_here(registry, row.service)
        if isinstance(plugin, str):
            events[row.id] = {"outcome": "failed", "reason": plugin}
            continue
        credentials: Any = None  # the organization has none for the service
        if row.ciphertext is not None:
            key = (row.organization_id, row.service, row.ciphertext)
            try:
                credentials = memo.get(key, _decode(session, settings, registry, key))
            except Exception as exc:  # unreadable credentials are this attempt's failure, never the worker's
                if is_connection_error(exc):
                    raise
                credentials = {"outcome": "failed", "reason": f"credentials unreadable: {type(exc).__name__}"}
        if isinstance(credentials, dict) and credentials.get("outcome") == "failed":
            events[row.id] = credentials
            continue
        contact = ContactInfo(id=row.contact_id, **{field: getattr(row, field) for field in CONTACT_FIELDS})
        outgoing = OutgoingMessage(
            id=row.message_id,
            organization_id=row.organization_id,
            content=row.content,
            contact=contact,
            subject=f"Message from {row.organization_name}" if row.organization_name else "Message",
        )
        field = plugin.info.address_field
        address = getattr(contact, field) if field else None
        sends.append(Send(row.id, row.service, plugin, outgoing, address, credentials, row.blast_id))
    return sends, events
