"""The coordinator: walks a message along its chain, records every attempt, applies outcomes.

It runs wherever a message needs to move: in the web process right after a message is accepted,
and in the workers' ``events`` queue when a send job reports back. The database decides: attempts
are numbered per message (unique), outcomes are recorded only while an attempt is pending, and the
state machine refuses backward moves, so a repeated event or a racing coordinator changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from saq import Queue
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import noload
from sqlalchemy.orm.attributes import set_committed_value

from app import metrics
from app.clock import utcnow
from app.config import Settings
from app.contacts.models import Contact
from app.logging import get_logger
from app.messaging import credits, state
from app.messaging.models import Attempt, AttemptOutcome, Message, MessageState
from app.messaging.usable import unusable
from app.queues import SEND_QUEUE, send_job_key, send_job_options
from app.servicehost.registry import PluginRegistry, service_statuses
from app.servicehost.services import CredentialService
from app.tenants.deps import scoped
from app.tenants.models import Organization

log = get_logger(__name__)


#: seconds a process trusts the service statuses it read (blacklisting applies within this delay)
STATUS_TTL = 5.0

#: ``(session, blast ids) -> those that must send nothing more`` (cancelled): app.blasts answers it; the
#: processes set it (app/core.py, app/worker/runner.py), since the messaging layer does not know blasts
StoppedBlasts = Callable[[AsyncSession, set[UUID]], Awaitable[set[UUID]]]


@dataclass(frozen=True)
class StatusView:
    """A recorded service status as plain values: the cache outlives the session that read it."""

    status: str
    reason: str | None


@dataclass
class Plan:
    """What :meth:`Coordinator.plan` decided for one message: the services it skips (``(seq, name,
    reason)``, recorded as failed attempts), then the one to start at ``seq``, or why the message fails."""

    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    service: str | None = None
    seq: int = 0
    fail: str | None = None


class KnownCredentials:
    """``CredentialService.has`` asked once per service for a batch of one organization's messages."""

    def __init__(self, service: CredentialService) -> None:
        self.service = service
        self.known: dict[str, bool] = {}

    async def has(self, name: str) -> bool:
        if name not in self.known:
            self.known[name] = await self.service.has(name)
        return self.known[name]


def pending_of(attempts: list[Attempt]) -> Attempt | None:
    """The attempt to hand to a worker among those :meth:`Coordinator.record` added, if any."""
    return attempts[-1] if attempts and attempts[-1].outcome == AttemptOutcome.PENDING else None


def apply_row(message: Message, row: Any) -> None:
    """Set a message's loaded values from a RETURNING row of its columns (no re-read, nothing to flush)."""
    for key, value in row.items():
        name = "reply_to_id" if key == "reply_to" else key
        set_committed_value(message, name, value)


@dataclass
class Coordinator:
    settings: Settings
    registry: PluginRegistry
    queues: dict[str, Queue]
    #: seconds a plugin gets; the send job's own timeout leaves room for the database work around it
    send_timeout: float = 30.0
    #: a send job that misses its heartbeat this long is stuck (its worker died)
    heartbeat: int = 10
    #: which blasts are cancelled (None: none is)
    stopped_blasts: StoppedBlasts | None = None
    _status_cache: tuple[float, dict[str, StatusView]] | None = field(default=None, init=False, repr=False)

    async def dispatch(self, session: AsyncSession, message_id: UUID) -> None:
        """Start the next service of the chain (or fail the message); commits, then enqueues the send job.
        Safe to call twice."""
        message = await session.scalar(select(Message).where(Message.id == message_id).with_for_update())
        if message is None or message.state not in state.IN_FLIGHT:
            return
        if message.send_at is not None and message.send_at > utcnow() and message.state == MessageState.PENDING:
            return  # scheduled: the sweep dispatches it when due
        attempts = list(
            await session.scalars(select(Attempt).where(Attempt.message_id == message.id).order_by(Attempt.seq))
        )
        if any(a.outcome == AttemptOutcome.PENDING for a in attempts):
            return  # a service is working on it
        contact = await session.scalar(
            select(Contact).where(Contact.id == message.contact_id).options(noload(Contact.categories))
        )
        attempt = await self._advance(session, message, len(attempts), contact)
        await session.commit()
        if attempt is not None:
            await self.enqueue_send(attempt.id)

    async def start(self, session: AsyncSession, message: Message, contact: Contact) -> Attempt | None:
        """Start a message that was just accepted in this transaction: no lock or re-read needed, as no
        one else knows it yet. Does not commit. (``MessageService.submit`` calls :meth:`plan` with the
        reads, then :meth:`record` with the writes, to keep its write transaction short.)"""
        return await self._advance(session, message, 0, contact)

    async def stopped(self, session: AsyncSession, blast_ids: set[UUID]) -> set[UUID]:
        if self.stopped_blasts is None or not blast_ids:
            return set()
        return await self.stopped_blasts(session, blast_ids)

    async def plan(
        self,
        message: Message,
        seq: int,
        contact: Contact | None,
        org: Organization | None,
        *,
        statuses: dict[str, StatusView],
        credentials: Any,
        stopped: bool,
    ) -> Plan:
        """The rules of the chain for one message from attempt ``seq`` on: the one place they are decided
        (for one message in :meth:`plan_for`, for a batch in :func:`app.messaging.bulk.hand_off`). Reads
        nothing but the credentials (``has``; cached per batch by the bulk path)."""
        if contact is None or org is None:
            return Plan(fail="contact_missing")
        if org.suspended:
            return Plan(fail="organization_suspended")
        if stopped:
            return Plan(fail="cancelled")
        if contact.opted_out:
            return Plan(fail="opted_out")
        plan = Plan()
        while seq < len(message.route):
            name = message.route[seq]
            reason = await unusable(
                name,
                statuses=statuses,
                registry=self.registry,
                credentials=credentials,
                contact=contact,
                content=message.content,
            )
            if reason is None:
                plan.service, plan.seq = name, seq
                return plan
            plan.skipped.append((seq, name, reason))
            seq += 1
        plan.fail = "every service of the chain failed" if message.route else "empty chain"
        return plan

    async def plan_for(
        self,
        session: AsyncSession,
        message: Message,
        contact: Contact | None,
        seq: int = 0,
        *,
        org: Organization | None = None,
    ) -> Plan:
        """Reads only: what :meth:`plan` decides for one message, with what it needs read from the database
        (``org``: the message's organization if the caller read it already)."""
        if org is None:
            org = await session.get(Organization, message.organization_id)
        statuses = await self.statuses(session)
        creds = scoped(
            CredentialService, session, message.organization_id, settings=self.settings, registry=self.registry
        )
        stopped = message.blast_id is not None and bool(await self.stopped(session, {message.blast_id}))
        return await self.plan(message, seq, contact, org, statuses=statuses, credentials=creds, stopped=stopped)

    async def _advance(
        self, session: AsyncSession, message: Message, seq: int, contact: Contact | None
    ) -> Attempt | None:
        """Add the next usable service's attempt and move the message to MSG_SENDING (or fail it), in the
        caller's transaction; the attempt to enqueue once committed, if any."""
        return pending_of(await self.record(session, message, await self.plan_for(session, message, contact, seq)))

    async def record(self, session: AsyncSession, message: Message, plan: Plan) -> list[Attempt]:
        """Writes only: the attempts of ``plan`` (returned, the pending one last) and the message's move (to
        MSG_SENDING, or MSG_FAILED)."""
        now = utcnow()
        added: list[Attempt] = []
        for seq, name, reason in plan.skipped:
            added.append(
                Attempt(
                    organization_id=message.organization_id,
                    message_id=message.id,
                    seq=seq,
                    service=name,
                    outcome=AttemptOutcome.FAILED,
                    error=reason,
                    started_at=now,
                    finished_at=now,
                )
            )
            metrics.attempt_finished(name, "skipped")
        session.add_all(added)
        if plan.service is None:
            if added:
                await session.flush()
            await self._fail(session, message, plan.fail or "every service of the chain failed")
            return added
        attempt = Attempt(
            organization_id=message.organization_id,
            message_id=message.id,
            seq=plan.seq,
            service=plan.service,
            outcome=AttemptOutcome.PENDING,
            started_at=now,
        )
        session.add(attempt)
        try:
            await session.flush()
        except IntegrityError:  # another coordinator got here first
            await session.rollback()
            return []
        row = await state.move_row(session, message.id, MessageState.SENDING, service=plan.service)
        if row is not None:
            apply_row(message, row)
        return [*added, attempt]

    async def statuses(self, session: AsyncSession) -> dict[str, StatusView]:
        """The recorded service statuses, read at most every few seconds per process (as plain values)."""
        now = time.monotonic()
        if self._status_cache is None or now - self._status_cache[0] > STATUS_TTL:
            rows = await service_statuses(session)
            self._status_cache = (now, {name: StatusView(row.status, row.reason) for name, row in rows.items()})
        return self._status_cache[1]

    async def _fail(self, session: AsyncSession, message: Message, reason: str) -> None:
        if await state.move(session, message.id, MessageState.FAILED, failure_reason=reason[:500]):
            await credits.release(session, message.id, message.organization_id)

    async def enqueue_send(self, attempt_id: UUID) -> None:
        try:
            await self.queues[SEND_QUEUE].enqueue(
                "send_message",
                attempt_id=str(attempt_id),
                key=send_job_key(attempt_id),
                **send_job_options(self.send_timeout, self.heartbeat),
            )
        except Exception as exc:
            log.warning("enqueue failed; the sweep will retry", attempt_id=str(attempt_id), error=repr(exc))

    async def _finish_attempt(
        self, session: AsyncSession, attempt_id: UUID, outcome: AttemptOutcome, **values: Any
    ) -> Attempt | None:
        """Record the outcome if the attempt is still pending; None if it was already recorded."""
        result = await session.execute(
            update(Attempt)
            .where(Attempt.id == attempt_id, Attempt.outcome == AttemptOutcome.PENDING)
            .values(outcome=outcome, finished_at=utcnow(), updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return None
        return await session.get(Attempt, attempt_id, populate_existing=True)

    async def on_sent(self, session: AsyncSession, attempt_id: UUID, provider_message_id: str) -> None:
        attempt = await self._finish_attempt(
            session, attempt_id, AttemptOutcome.SENT, provider_message_id=provider_message_id
        )
        if attempt is None:
            await session.rollback()
            return
        plugin = self.registry.get(attempt.service)
        # a service whose acceptance is delivery to an intermediary (Telegram) says so
        accepted = MessageState(plugin.info.accepted_state) if plugin is not None else MessageState.SENT
        moved = await state.move(
            session,
            attempt.message_id,
            accepted,
            service=attempt.service,
            provider_message_id=provider_message_id,
            sent_at=utcnow(),
        )
        if moved:
            await credits.charge(session, attempt.message_id, attempt.organization_id)
        await session.commit()
        metrics.attempt_finished(attempt.service, AttemptOutcome.SENT)

    async def on_failed(self, session: AsyncSession, attempt_id: UUID, reason: str) -> None:
        attempt = await self._finish_attempt(session, attempt_id, AttemptOutcome.FAILED, error=reason[:1000])
        if attempt is None:
            await session.rollback()
            # recorded already: a repeated event, or this event's retry after the dispatch below failed
            # (the database went away between the two transactions); dispatching again is harmless
            attempt = await session.get(Attempt, attempt_id)
            if attempt is None or attempt.outcome != AttemptOutcome.FAILED:
                await session.rollback()
                return
            await session.rollback()
        else:
            await session.commit()
            metrics.attempt_finished(attempt.service, AttemptOutcome.FAILED)
        await self.dispatch(session, attempt.message_id)
