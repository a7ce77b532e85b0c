"""Group commit of accepted messages (docs/decisions/0037-group-commit-of-accepts.md).

A message accepted for sending at once ends its request with a few writes: the message, its
Idempotency-Key, its attempts, its move to MSG_SENDING (or MSG_FAILED) and its reserved credit. Each
request used to write them in a transaction of its own; on SQLite, where the database has one write
lock, those transactions queue one behind the other, and each holds the lock while its statements wait
their turn on the event loop (a quarter of the accept's time at 10 concurrent clients was that wait).

Here a process writes the accepts that are ready together (:mod:`app.db.group_commit`): a request
hands its write set to :func:`write_accepted` and waits; every write set handed over since the last
transaction is written in ONE transaction — one multi-row INSERT per table, one conditional UPDATE per
target state (:func:`app.messaging.state.move_many_rows`), one UPDATE of each organization's credits —
and answers each request once committed. A request alone is written at once, as before (no timer, no
added latency); under load the batches form by themselves while the previous one commits.

The rules do not change: the request decided everything before (:meth:`Coordinator.plan`), and what a
batch cannot write (an Idempotency-Key that raced in, an organization without the credits for all its
messages of the batch) sends each of its write sets through a transaction of its own, so one request's
error is that request's alone.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import metrics
from app.clock import utcnow
from app.db.group_commit import group_commit
from app.messaging import bulk, credits, state
from app.messaging.coordinator import Plan, apply_row
from app.messaging.models import Attempt, AttemptOutcome, IdempotencyKey, Message, MessageState

_MESSAGE_COLUMNS = tuple(c.key for c in Message.__table__.columns if c.key != "sa_orm_sentinel")


@dataclass
class WriteSet:
    """What one accepted message writes: the message (transient, PENDING, its credit RESERVED), the
    chain's plan for it, and its Idempotency-Key (key, request hash) if the request had one. ``attempts``
    are set once committed (transient, the pending one last)."""

    message: Message
    plan: Plan
    idempotency: tuple[str, str] | None = None
    attempts: list[Attempt] = field(default_factory=list)


async def write_all(session: AsyncSession, items: Sequence[WriteSet]) -> list[tuple[Any, list[dict[str, Any]]]]:
    """The writes of ``items`` in the session's write transaction (which the caller commits): for each item
    its message's columns after the move, and its attempts' rows. Assigns nothing to the items (the
    transaction may yet fail)."""
    now = utcnow()
    stamps = {"created_at": now, "updated_at": now}
    await session.execute(
        insert(Message), [{k: getattr(i.message, k) for k in _MESSAGE_COLUMNS} | stamps for i in items]
    )
    keys = [
        {"id": uuid4(), "organization_id": i.message.organization_id, "key": key, "request_hash": digest}
        | {"message_id": i.message.id, "created_at": now, "updated_at": now}
        for i in items
        if i.idempotency
        for key, digest in [i.idempotency]
    ]
    if keys:
        await session.execute(insert(IdempotencyKey), keys)
    attempts = [row for i in items for row in bulk.plan_rows(i.message, i.plan, now)]
    if attempts:  # (message_id, seq) is unique
        await session.execute(insert(Attempt), attempts)
    sending: dict[str, list[UUID]] = defaultdict(list)
    failing: dict[tuple[UUID, str], list[UUID]] = defaultdict(list)
    per_org: dict[UUID, int] = defaultdict(int)
    for i in items:
        per_org[i.message.organization_id] += 1
        if i.plan.service is not None:
            sending[i.plan.service].append(i.message.id)
        else:
            failing[(i.message.organization_id, (i.plan.fail or "every service of the chain failed")[:500])].append(
                i.message.id
            )
    moved: dict[UUID, Any] = {}
    for service, ids in sending.items():
        rows = await state.move_many_rows(session, ids, MessageState.SENDING, service=service)
        moved.update((row["id"], row) for row in rows)
    failed: dict[UUID, list[UUID]] = defaultdict(list)
    for (org_id, reason), ids in failing.items():
        rows = await state.move_many_rows(session, ids, MessageState.FAILED, failure_reason=reason)
        moved.update((row["id"], row) for row in rows)
        failed[org_id].extend(row["id"] for row in rows)
    # the organizations' rows last: locked until the commit (reserved, then the failed ones' released)
    for org_id, count in per_org.items():
        await credits.reserve(session, org_id, count)
    for org_id, ids in failed.items():
        await credits.release_many(session, org_id, ids)
    attempts_of: dict[UUID, list[dict[str, Any]]] = defaultdict(list)
    for row in attempts:
        attempts_of[row["message_id"]].append(row)
    return [(moved[i.message.id], attempts_of[i.message.id]) for i in items]


def settle(item: WriteSet, written: tuple[Any, list[dict[str, Any]]]) -> None:
    """Give a committed write set its message's values after the move, and its attempts."""
    row, attempts = written
    apply_row(item.message, row)
    item.attempts = [Attempt(**row) for row in attempts]
    for a in item.attempts:
        if a.outcome == AttemptOutcome.FAILED:
            metrics.attempt_finished(a.service, "skipped")


async def write_accepted(engine: AsyncEngine, item: WriteSet) -> None:
    """Write an accepted message with the others of this process ready now (committed on return); raises
    what its own transaction raised (``IntegrityError`` for a key that raced in, ``PaymentRequired``)."""
    writer = group_commit(
        "accept",
        engine,
        lambda: AsyncSession(bind=engine, expire_on_commit=False),
        write_all,
        functools.partial(metrics.group_committed, "accept"),
    )
    settle(item, await writer.submit(item))
