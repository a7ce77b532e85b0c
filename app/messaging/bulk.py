"""The coordinator's bulk path, for blast traffic (docs/decisions/0029-blast-throughput.md).

The same rules as one message at a time (:meth:`Coordinator.plan` decides for each message, the state
machine moves them), with fewer statements: a batch of messages is read in a few queries, its first
attempts are one multi-row INSERT, its moves one conditional UPDATE per target state
(:func:`state.move_many`), its credits one UPDATE of the organization's row (``credits.*_many``). Send jobs
carry a batch of attempts of one organization and one service (``send_batch`` on the ``blast`` queue),
and their outcomes come back in one ``apply_outcomes`` job.
"""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import noload

from app import metrics
from app.clock import utcnow
from app.contacts.models import Contact
from app.db.config import write_transaction
from app.db.group_commit import group_commit
from app.logging import get_logger
from app.messaging import credits, state
from app.messaging.coordinator import Coordinator, KnownCredentials, Plan
from app.messaging.models import Attempt, AttemptOutcome, Message, MessageState
from app.queues import (
    BLAST_QUEUE,
    EVENTS_QUEUE,
    SEND_BATCH,
    batch_job_key,
    batch_job_options,
    event_job_options,
)
from app.servicehost.services import CredentialService
from app.tenants.deps import scoped
from app.tenants.models import Organization

log = get_logger(__name__)

#: a send job's outcome: ``{"outcome": "sent", "provider_message_id"}`` or ``{"outcome": "failed", "reason"}``
Event = dict[str, Any]


@dataclass(frozen=True)
class Batch:
    """Attempts of one organization on one service, carried by one ``send_batch`` job (``key``)."""

    key: str
    organization_id: UUID
    service: str
    attempt_ids: list[UUID]


def _by_id(column: Any, values: dict[UUID, str]) -> Any:
    """``CASE WHEN id = … THEN …``: each row its own value in one UPDATE. The comparisons bind each id with
    the column's type (a ``case(mapping, value=column)`` would not: on SQLite no id would match)."""
    return case(*[(column == key, value) for key, value in values.items()])


def _chunks(items: list[UUID], size: int) -> list[list[UUID]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def plan_rows(message: Message, plan: Plan, now: Any) -> list[dict[str, Any]]:
    """The attempt rows of ``plan`` for ``message`` (for one multi-row INSERT): the skipped services as
    failed attempts, then the pending one if a service can carry it (last)."""
    base = {"organization_id": message.organization_id, "message_id": message.id, "started_at": now}
    base |= {"created_at": now, "provider_message_id": None, "job_key": None}
    rows = [
        {**base, "id": uuid4(), "seq": seq, "service": name, "outcome": AttemptOutcome.FAILED}
        | {"error": reason, "finished_at": now, "updated_at": now}
        for seq, name, reason in plan.skipped
    ]
    if plan.service is not None:
        rows.append(
            {**base, "id": uuid4(), "seq": plan.seq, "service": plan.service, "outcome": AttemptOutcome.PENDING}
            | {"error": None, "finished_at": None, "updated_at": now}
        )
    return rows


async def hand_off(coordinator: Coordinator, session: AsyncSession, message_ids: Sequence[UUID]) -> list[Batch]:
    """:meth:`Coordinator.dispatch` for many messages, in the caller's write transaction (it commits, then
    calls :func:`enqueue_batches`): the next usable service of each one's chain gets a pending attempt and
    the message moves to MSG_SENDING, or it fails (credit released). Messages out of flight, scheduled
    for later, or with a pending attempt are left alone, as by ``dispatch``."""
    if not message_ids:
        return []
    now = utcnow()
    messages = [
        m
        for m in await session.scalars(
            select(Message)
            .where(Message.id.in_(list(message_ids)), Message.state.in_(state.IN_FLIGHT))
            .with_for_update()
        )
        if not (m.state == MessageState.PENDING and m.send_at is not None and m.send_at > now)
    ]
    if not messages:
        return []
    ids = [m.id for m in messages]
    tried: dict[UUID, int] = {}
    busy: set[UUID] = set()
    pending = func.sum(case((Attempt.outcome == AttemptOutcome.PENDING, 1), else_=0))
    for message_id, count, working in await session.execute(
        select(Attempt.message_id, func.count(), pending)
        .where(Attempt.message_id.in_(ids))
        .group_by(Attempt.message_id)
    ):
        tried[message_id] = int(count)
        if working:
            busy.add(message_id)
    contacts = {
        c.id: c
        for c in await session.scalars(
            select(Contact).where(Contact.id.in_({m.contact_id for m in messages})).options(noload(Contact.categories))
        )
    }
    orgs = {
        o.id: o
        for o in await session.scalars(
            select(Organization).where(Organization.id.in_({m.organization_id for m in messages}))
        )
    }
    stopped = await coordinator.stopped(session, {m.blast_id for m in messages if m.blast_id is not None})
    statuses = await coordinator.statuses(session)
    known = {
        org_id: KnownCredentials(
            scoped(CredentialService, session, org_id, settings=coordinator.settings, registry=coordinator.registry)
        )
        for org_id in orgs
    }
    attempts: list[dict[str, Any]] = []
    sending: dict[str, list[UUID]] = defaultdict(list)
    starting: dict[tuple[UUID, str], list[UUID]] = defaultdict(list)
    failing: dict[tuple[UUID, str], list[UUID]] = defaultdict(list)
    for m in messages:
        if m.id in busy:
            continue  # a service is working on it
        plan = await coordinator.plan(
            m,
            tried.get(m.id, 0),
            contacts.get(m.contact_id),
            orgs.get(m.organization_id),
            statuses=statuses,
            credentials=known.get(m.organization_id),
            stopped=m.blast_id in stopped,
        )
        rows = plan_rows(m, plan, now)
        attempts.extend(rows)
        if plan.service is None:
            failing[(m.organization_id, (plan.fail or "empty chain")[:500])].append(m.id)
            continue
        attempt_id = rows[-1]["id"]
        sending[plan.service].append(m.id)
        starting[(m.organization_id, plan.service)].append(attempt_id)
    batches = [
        Batch(batch_job_key(uuid4()), org_id, service, chunk)
        for (org_id, service), attempt_ids in starting.items()
        for chunk in _chunks(attempt_ids, SEND_BATCH)
    ]
    key_of = {attempt_id: b.key for b in batches for attempt_id in b.attempt_ids}
    for row in attempts:
        row["job_key"] = key_of.get(row["id"])
    if attempts:  # one multi-row INSERT; (message_id, seq) is unique: a racing coordinator rolls this back
        await session.execute(insert(Attempt), attempts)
    for service, moving in sending.items():
        await state.move_many(session, moving, MessageState.SENDING, service=service)
    for (org_id, reason), failed in failing.items():
        moved = await state.move_many(session, failed, MessageState.FAILED, failure_reason=reason)
        await credits.release_many(session, org_id, moved)
    return batches


async def enqueue_batches(coordinator: Coordinator, batches: Sequence[Batch]) -> None:
    """Enqueue the ``send_batch`` jobs of committed batches, concurrently (SAQ has no multi-job enqueue; a
    job carries :data:`SEND_BATCH` messages, so this is one round trip per hundred). A job that Redis
    refuses is found again by the sweep (its attempts' ``job_key``)."""
    queue = coordinator.queues[BLAST_QUEUE]

    async def one(batch: Batch) -> None:
        try:
            await queue.enqueue(
                "send_batch",
                attempt_ids=[str(a) for a in batch.attempt_ids],
                key=batch.key,
                **batch_job_options(coordinator.send_timeout, coordinator.heartbeat, len(batch.attempt_ids)),
            )
        except Exception as exc:
            log.warning("enqueue failed; the sweep will retry", job=batch.key, error=repr(exc))

    await asyncio.gather(*(one(b) for b in batches))


async def report_outcomes(coordinator: Coordinator, key: str, outcomes: list[dict[str, Any]]) -> None:
    """Hand a batch's outcomes to the ``events`` queue, as one job (applied by :func:`apply_outcomes`)."""
    await coordinator.queues[EVENTS_QUEUE].enqueue(
        "apply_outcomes", outcomes=outcomes, key=f"event:{key}", **event_job_options(coordinator.heartbeat)
    )


async def apply_outcomes(coordinator: Coordinator, session: AsyncSession, outcomes: Sequence[dict[str, Any]]) -> None:
    """:meth:`Coordinator.on_sent` / :meth:`~Coordinator.on_failed` for a batch, in one write transaction;
    then the failed ones go on to the next service of their chain through :func:`hand_off`. Each outcome is
    ``{"attempt_id", "outcome": "sent"|"failed", "provider_message_id" | "reason"}``; one already recorded
    (a repeated event) changes nothing."""
    async with write_transaction(session):
        sent, failed, retry = await record_outcomes(coordinator, session, outcomes)
    for a in sent:  # committed: counted (app/metrics.py)
        metrics.attempt_finished(a.service, AttemptOutcome.SENT)
    for a in failed:
        metrics.attempt_finished(a.service, AttemptOutcome.FAILED)
    await enqueue_batches(coordinator, retry)


async def _finish(
    session: AsyncSession, outcome: AttemptOutcome, column: str, values: dict[UUID, str], now: Any
) -> None:
    """Record ``outcome`` on the attempts of ``values``, each with its own value of ``column`` (one UPDATE)."""
    if values:
        await session.execute(
            update(Attempt)
            .where(Attempt.id.in_(list(values)))
            .values({"outcome": outcome, column: _by_id(Attempt.id, values), "finished_at": now, "updated_at": now})
            .execution_options(synchronize_session=False)
        )


async def record_outcomes(
    coordinator: Coordinator, session: AsyncSession, outcomes: Sequence[dict[str, Any]]
) -> tuple[list[Any], list[Any], list[Batch]]:
    """The writes of :func:`apply_outcomes` in the caller's write transaction: the attempts recorded sent and
    failed (plain rows: ``id``, ``message_id``, ``organization_id``, ``service``) and the batches of the failed
    ones' next services, to enqueue once committed."""
    by_id = {UUID(o["attempt_id"]): o for o in outcomes}
    open_attempts = list(  # plain rows: no ORM objects for a batch (docs/performance.md)
        await session.execute(
            select(Attempt.id, Attempt.message_id, Attempt.organization_id, Attempt.service)
            .where(Attempt.id.in_(list(by_id)), Attempt.outcome == AttemptOutcome.PENDING)
            .with_for_update()
        )
    )
    now = utcnow()
    sent = [a for a in open_attempts if by_id[a.id]["outcome"] == "sent"]
    failed = [a for a in open_attempts if by_id[a.id]["outcome"] != "sent"]
    provider_ids = {a.id: str(by_id[a.id]["provider_message_id"]) for a in sent}
    await _finish(session, AttemptOutcome.SENT, "provider_message_id", provider_ids, now)
    reasons = {a.id: str(by_id[a.id].get("reason") or "failed")[:1000] for a in failed}
    await _finish(session, AttemptOutcome.FAILED, "error", reasons, now)
    groups: dict[tuple[UUID, str], list[Any]] = defaultdict(list)
    for a in sent:
        groups[(a.organization_id, a.service)].append(a)
    for (org_id, service), group in groups.items():
        plugin = coordinator.registry.get(service)
        accepted = MessageState(plugin.info.accepted_state) if plugin is not None else MessageState.SENT
        provider_of = {a.message_id: str(by_id[a.id]["provider_message_id"]) for a in group}
        moved = await state.move_many(
            session,
            list(provider_of),
            accepted,
            service=service,
            provider_message_id=_by_id(Message.id, provider_of),
            sent_at=now,
        )
        await credits.charge_many(session, org_id, moved)
    retry = await hand_off(coordinator, session, [a.message_id for a in failed])
    return sent, failed, retry


async def _write_sent(
    coordinator: Coordinator, session: AsyncSession, outcomes: Sequence[dict[str, Any]]
) -> list[str | None]:
    sent, _, _ = await record_outcomes(coordinator, session, outcomes)
    services = {str(a.id): a.service for a in sent}
    return [services.get(o["attempt_id"]) for o in outcomes]


async def record_sent(
    coordinator: Coordinator, sessions: Callable[[], AsyncSession], attempt_id: str, event: Event
) -> bool:
    """A send job's sent outcome recorded in the worker itself, with the others of this process ready now
    in one transaction (:mod:`app.db.group_commit`), rather than handed to the ``events`` queue: one job
    and one transaction per message fewer. False when it was not (the database away, the batch failed):
    the job then reports it as an event, as it reports failures (whose chain goes on there)."""
    if event.get("outcome") != "sent":
        return False
    writer = group_commit(
        "sent",
        sessions,
        sessions,
        functools.partial(_write_sent, coordinator),
        functools.partial(metrics.group_committed, "sent"),
    )
    try:
        service = await writer.submit({"attempt_id": attempt_id, **event})
    except Exception as exc:
        log.warning("sent outcome not recorded here; reported as an event", attempt_id=attempt_id, error=repr(exc))
        return False
    if service is not None:  # committed: counted (app/metrics.py); None: recorded before (a repeated job)
        metrics.attempt_finished(service, AttemptOutcome.SENT)
    return True
