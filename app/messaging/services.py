"""Business rules of servicechains and messages."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
from advanced_alchemy.filters import LimitOffset, OrderBy
from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import noload

from app import metrics
from app.clock import utcnow
from app.contacts.models import Contact
from app.contacts.services import ContactService
from app.db.config import closing_writes
from app.db.scoping import OrgScopedRepository, OrgScopedService
from app.errors import Conflict, ValidationProblem
from app.messaging import accept_read, credits, templating
from app.messaging.accept_read import NO_CHAIN
from app.messaging.accepting import WriteSet, write_accepted
from app.messaging.coordinator import Coordinator, Plan, pending_of
from app.messaging.models import (
    Attempt,
    CreditState,
    Direction,
    IdempotencyKey,
    Message,
    MessageState,
    Servicechain,
)
from app.servicehost.registry import service_statuses
from app.tenants.models import Organization


class ServicechainRepository(OrgScopedRepository[Servicechain]):
    model_type = Servicechain


class ServicechainService(OrgScopedService[Servicechain]):
    repository_type = ServicechainRepository

    async def _check(self, data: dict[str, Any], exclude: UUID | None = None) -> dict[str, Any]:
        if "services" in data:
            installed = await service_statuses(self.repository.session)
            unknown = [s for s in data["services"] if s not in installed]
            if unknown:
                raise ValidationProblem(f"Unknown service(s): {', '.join(unknown)}", "services")
            if len(set(data["services"])) != len(data["services"]):
                raise ValidationProblem("A service may appear only once in a chain.", "services")
        if "name" in data:
            data["name"] = data["name"].strip()
            clash = Servicechain.name == data["name"]
            if exclude is not None:
                clash = clash & (Servicechain.id != exclude)
            if await self.exists(clash):
                raise Conflict(f"A servicechain named {data['name']!r} already exists.")
        return data

    async def create_chain(self, data: dict[str, Any]) -> Servicechain:
        return await self.create(await self._check(data))

    async def update_chain(self, chain_id: UUID, changes: dict[str, Any]) -> Servicechain:
        await self.get(chain_id)
        return await self.update(await self._check(changes, exclude=chain_id), item_id=chain_id)

    async def organization_default(self) -> UUID | None:
        return await self.repository.session.scalar(
            select(Organization.default_servicechain_id).where(Organization.id == self.organization_id)
        )

    async def resolve(self, requested: UUID | None, contact: Contact) -> Servicechain:
        """The chain of an outgoing message: the one asked for, else the contact's default, else the
        organization's. Messages and blasts decide it here, and only here."""
        chain_id = requested or contact.servicechain_id or await self.organization_default()
        if chain_id is None:
            raise ValidationProblem(NO_CHAIN, "servicechain_id")
        return await self.get(chain_id)

    async def remove(self, chain_id: UUID) -> None:
        chain = await self.get(chain_id)
        session = self.repository.session
        if await self.organization_default() == chain.id:
            raise Conflict(
                "It is the organization's default servicechain; choose another default (or none) in Settings first."
            )
        in_use_by_contacts = await session.scalar(
            select(
                exists().where(Contact.servicechain_id == chain.id, Contact.organization_id == chain.organization_id)
            )
        )
        if in_use_by_contacts:
            raise Conflict("Contacts use this servicechain as their default; choose another chain for them first.")
        in_flight = await session.scalar(
            select(
                exists().where(
                    Message.servicechain_id == chain.id,
                    Message.state.in_([MessageState.PENDING, MessageState.SENDING]),
                )
            )
        )
        if in_flight:
            raise Conflict("Messages are still being sent through this servicechain; try again when they finish.")
        await self.delete(chain_id)


class MessageRepository(OrgScopedRepository[Message]):
    model_type = Message


class AttemptRepository(OrgScopedRepository[Attempt]):
    model_type = Attempt


def request_hash(body: msgspec.Struct) -> str:
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


async def render(content: str, contact: Contact) -> str:
    """``content`` rendered for ``contact`` (a template error is the request's 422)."""
    try:
        return await templating.render_in_thread(content, contact)
    except templating.TemplateProblem as exc:
        raise ValidationProblem(str(exc), "content") from exc


class MessageService(OrgScopedService[Message]):
    repository_type = MessageRepository

    @property
    def session(self) -> AsyncSession:
        return self.repository.session

    def attempts(self) -> AttemptRepository:
        return AttemptRepository(session=self.session, organization_id=self.organization_id)

    async def attempts_of(self, message_id: UUID) -> list[Attempt]:
        return list(await self.attempts().list(Attempt.message_id == message_id, order_by=[("seq", False)]))

    async def _replay(self, key: str, digest: str) -> Message | None:
        row = await self.session.scalar(
            select(IdempotencyKey).where(
                IdempotencyKey.organization_id == self.organization_id, IdempotencyKey.key == key
            )
        )
        if row is None:
            return None
        if row.request_hash != digest:
            raise Conflict("This Idempotency-Key was used with a different request body.")
        return await self.get(row.message_id)

    async def render_for(self, contact_id: UUID, content: str) -> tuple[Contact, str]:
        contacts = ContactService(session=self.session, organization_id=self.organization_id)
        contact = await contacts.get(contact_id, load=[noload(Contact.categories)])
        return contact, await render(content, contact)

    async def accept(
        self, data: Any, idempotency_key: str | None = None, digest: str | None = None
    ) -> tuple[Message, Contact | None]:
        """Validate and store a new outgoing message as MSG_PENDING with its credit reserved, without
        starting it (committed). Returns (message, contact); contact is None when a known Idempotency-Key
        with the same body gave back the message it created before."""
        message, contact, _ = await self._accept(data, idempotency_key, digest, None)
        return message, contact

    async def _accept(
        self, data: Any, idempotency_key: str | None, digest: str | None, coordinator: Coordinator | None
    ) -> tuple[Message, Contact | None, list[Attempt]]:
        """Reads first (the replayed key, the contact and its rendering, the chain, the services that can
        carry it), then the writes in one short transaction (:func:`closing_writes`): the message, its
        attempts, its move to MSG_SENDING, its Idempotency-Key, and last the credit (the organization's
        row, locked until the commit). With ``coordinator`` the message starts on its chain.

        Returns (message, contact, attempts); contact is None for a replayed Idempotency-Key."""
        if idempotency_key:
            existing = await self._replay(idempotency_key, digest or "")
            if existing is not None:
                return existing, None, []
        accepting = await accept_read.read(self.repository, data.contact_id, data.servicechain_id)
        contact = accepting.contact
        content = await render(data.content, contact)  # the content's 422 first, then the chain's problem
        chain_id, route = accepting.chain()
        if data.reply_to is not None:
            await self.get(data.reply_to)
        send_at = data.send_at
        if send_at is not None and send_at.tzinfo is None:
            send_at = send_at.replace(tzinfo=UTC)
        send_at = send_at if send_at and send_at > utcnow() else None
        message = Message(
            id=uuid4(),
            organization_id=self.organization_id,
            contact_id=contact.id,
            servicechain_id=chain_id,
            direction=Direction.OUTGOING,
            state=MessageState.PENDING,
            route=route,
            content=content,
            reply_to_id=data.reply_to,
            send_at=send_at,
            credit=CreditState.RESERVED,
        )
        plan = None
        if coordinator is not None and send_at is None:  # the reads, before the write transaction
            plan = await coordinator.plan_for(self.session, message, contact, org=accepting.organization)
        attempts: list[Attempt] = []
        idempotency = (idempotency_key, digest or "") if idempotency_key else None
        engine = self.session.bind
        try:
            if plan is not None and isinstance(engine, AsyncEngine):  # sent at once: written with the others ready
                if self.session.in_transaction():
                    await self.session.commit()  # nothing written: ends the reads' snapshot, frees the connection
                writes = WriteSet(message, plan, idempotency)
                await write_accepted(engine, writes)
                attempts = writes.attempts
            else:
                attempts = await self._write_alone(message, plan, idempotency, coordinator)
        except IntegrityError:  # the same key raced in from another request
            if idempotency_key:
                existing = await self._replay(idempotency_key, digest or "")
                if existing is not None:
                    return existing, None, []
            raise
        pending = pending_of(attempts)
        if coordinator is not None and pending is not None:
            await coordinator.enqueue_send(pending.id)
        return message, contact, attempts

    async def _write_alone(
        self, message: Message, plan: Plan | None, idempotency: tuple[str, str] | None, coordinator: Coordinator | None
    ) -> list[Attempt]:
        """The writes of one accepted message in the request's own session (scheduled messages, and sessions
        bound to a connection): one short transaction, the organization's row last."""
        attempts: list[Attempt] = []
        async with closing_writes(self.session):
            self.session.add(message)
            await self.session.flush()
            if idempotency:
                key, digest = idempotency
                self.session.add(
                    IdempotencyKey(
                        organization_id=self.organization_id, key=key, request_hash=digest, message_id=message.id
                    )
                )
                await self.session.flush()
            if plan is not None and plan.service is None:  # fails at once: reserved, then released
                await credits.reserve(self.session, self.organization_id)
            if coordinator is not None and plan is not None:
                attempts = await coordinator.record(self.session, message, plan)
            if plan is None or plan.service is not None:  # the organization's row: last, locked to the commit
                await credits.reserve(self.session, self.organization_id)
        return attempts

    async def submit(
        self, data: Any, idempotency_key: str | None = None, *, coordinator: Coordinator
    ) -> tuple[Message, bool]:
        """Accept a message and start it on its chain (scheduled ones wait for the sweep): what the API and
        the compose page call. Returns (message, replayed).

        This is the request's transaction boundary: the message, its reserved credit, its Idempotency-Key and
        its first attempt are committed here together (then the attempt's send job is enqueued), or nothing
        is (rolled back on any error). The session plugin's autocommit finds nothing left to write.
        """
        message, replayed, _ = await self.submit_with_attempts(data, idempotency_key, coordinator=coordinator)
        return message, replayed

    async def submit_with_attempts(
        self, data: Any, idempotency_key: str | None = None, *, coordinator: Coordinator
    ) -> tuple[Message, bool, list[Attempt]]:
        """:meth:`submit`, with the message's attempts (those just made; a replayed message's, read)."""
        try:
            message, contact, attempts = await self._accept(data, idempotency_key, request_hash(data), coordinator)
        except BaseException:
            await self.session.rollback()
            raise
        if contact is None:
            return message, True, await self.attempts_of(message.id)
        metrics.message_accepted()
        return message, False, attempts

    @staticmethod
    def search_filters(
        *,
        contact_id: UUID | None = None,
        state: MessageState | str | None = None,
        direction: Direction | str | None = None,
        blast_id: UUID | None = None,
        since: datetime | None = None,
    ) -> list[Any]:
        """Where-clauses for the filters both faces offer (a list page passes them to its pager)."""
        filters: list[Any] = []
        if contact_id:
            filters.append(Message.contact_id == contact_id)
        if state:
            filters.append(Message.state == MessageState(state))
        if direction:
            filters.append(Message.direction == Direction(direction))
        if blast_id:
            filters.append(Message.blast_id == blast_id)
        if since:
            filters.append(Message.created_at >= since)
        return filters

    async def latest_change(self) -> datetime | None:
        """When any of the organization's messages last changed (or arrived): what a live page's ETag is
        made of. One backward step on the ``(organization_id, updated_at)`` index, whatever the volume."""
        statement = select(func.max(Message.updated_at)).where(Message.organization_id == self.organization_id)
        return (await self.session.execute(statement)).scalar_one()

    async def message_version(self, message_id: UUID) -> tuple[int, datetime | None]:
        """The attempts of one message and the latest change of any of them (the detail page's ETag)."""
        statement = select(func.count(), func.max(Attempt.updated_at)).where(
            Attempt.organization_id == self.organization_id, Attempt.message_id == message_id
        )
        count, latest = (await self.session.execute(statement)).one()
        return int(count), latest

    async def search(
        self,
        page: LimitOffset,
        *,
        contact_id: UUID | None = None,
        state: MessageState | str | None = None,
        direction: Direction | str | None = None,
        blast_id: UUID | None = None,
        since: datetime | None = None,
        oldest_first: bool = False,
    ) -> tuple[Sequence[Message], int]:
        """One page of the organization's messages, newest first (a conversation: oldest first), narrowed by
        :meth:`search_filters`; and the total that match."""
        filters = self.search_filters(
            contact_id=contact_id, state=state, direction=direction, blast_id=blast_id, since=since
        )
        order = OrderBy(field_name="created_at", sort_order="asc" if oldest_first else "desc")
        return await self.list_and_count(*filters, page, order)
