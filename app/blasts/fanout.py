"""The fan-out of a blast, one step at a time (docs/decisions/0022-blast-fan-out.md).

A step claims the blast (``generation`` compare-and-set: one chain of steps at a time, a stale or
repeated job changes nothing), creates at most one batch of messages for the next recipients in key
order (rendered per contact, one multi-row INSERT, the blast's reserved credits passed on to them,
the cursor moved, all in one transaction), then hands them to the coordinator. The number of messages
of a blast in flight is bounded (:data:`WINDOW`), so the send queue never holds a whole blast: single
messages and other blasts get their turn, and a cancel still finds most of the audience not yet sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID, uuid4

import anyio
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import noload

from app import metrics
from app.blasts.models import Blast, BlastState, blast_recipient
from app.blasts.present import payload
from app.clock import utcnow
from app.contacts.models import Contact
from app.db.config import write_transaction
from app.logging import get_logger
from app.messaging import credits, state, templating
from app.messaging.coordinator import Coordinator
from app.messaging.models import CreditState, Direction, Message, MessageState
from app.messaging.services import MessageRepository
from app.webhooks.outbox import emit_now

log = get_logger(__name__)

#: messages created per step (one transaction); a step creates more only once fewer wait to be handed on
BATCH = 100
#: messages of one blast pending or sending at once
WINDOW = 500

Sessions = Callable[[], AsyncSession]


async def claim(session: AsyncSession, blast_id: UUID, generation: int) -> Blast | None:
    """Take the blast for the step ``generation``; None if another step did, or it has ended."""
    result = await session.execute(
        update(Blast)
        .where(
            Blast.id == blast_id,
            Blast.generation == generation,
            Blast.state.in_((BlastState.FANNING_OUT, BlastState.SENDING)),
        )
        .values(generation=generation + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    return await session.get(Blast, blast_id, populate_existing=True)


async def in_flight(session: AsyncSession, blast_id: UUID) -> int:
    return int(
        await session.scalar(
            select(func.count()).where(Message.blast_id == blast_id, Message.state.in_(state.IN_FLIGHT))
        )
        or 0
    )


def _render_all(content: str, values: list[dict[str, str]]) -> list[str | templating.TemplateProblem]:
    out: list[str | templating.TemplateProblem] = []
    for v in values:
        try:
            out.append(templating.render_values(content, v))
        except templating.TemplateProblem as exc:
            out.append(exc)
    return out


async def create_batch(session: AsyncSession, blast: Blast, size: int) -> list[UUID]:
    """Messages for the next ``size`` recipients; the ids of those to hand to the coordinator."""
    query = (
        select(Contact)
        .join(blast_recipient, blast_recipient.c.contact_id == Contact.id)
        .where(blast_recipient.c.blast_id == blast.id, Contact.organization_id == blast.organization_id)
        .order_by(blast_recipient.c.contact_id)
        .limit(size)
        .options(noload(Contact.categories))
    )
    if blast.cursor is not None:
        query = query.where(blast_recipient.c.contact_id > blast.cursor)
    contacts = list(await session.scalars(query))
    values = [templating.values_of(c) for c in contacts]
    rendered = await anyio.to_thread.run_sync(_render_all, blast.content, values)
    rows: list[dict[str, object]] = []
    ready: list[UUID] = []
    refused: list[UUID] = []
    for contact, content in zip(contacts, rendered, strict=True):
        message_id = uuid4()
        rows.append(
            {
                "id": message_id,
                "contact_id": contact.id,
                "servicechain_id": blast.servicechain_id,
                "blast_id": blast.id,
                "direction": Direction.OUTGOING,
                "state": MessageState.PENDING,
                "route": list(blast.route),
                "content": content if isinstance(content, str) else blast.content,
                "credit": CreditState.RESERVED,
            }
        )
        (ready if isinstance(content, str) else refused).append(message_id)
    await MessageRepository(session=session, organization_id=blast.organization_id).insert_many(rows)
    metrics.message_accepted(len(rows), kind="blast")
    if refused:  # a template that renders for no one was refused at POST; this is one contact's fields
        moved = await state.move_many(session, refused, MessageState.FAILED, failure_reason="template_error")
        await credits.release_many(session, blast.organization_id, moved)
    changes: dict[str, object] = {
        "fanned_out": Blast.fanned_out + len(contacts),
        "credits_held": Blast.credits_held - len(contacts),
        "updated_at": utcnow(),
    }
    if contacts:
        changes["cursor"] = contacts[-1].id
    if len(contacts) < size:  # every recipient has its message
        changes["state"] = BlastState.SENDING
    await session.execute(
        update(Blast).where(Blast.id == blast.id).values(**changes).execution_options(synchronize_session=False)
    )
    return ready


async def release_held(session: AsyncSession, blast_id: UUID, organization_id: UUID) -> None:
    """Give back the credits the blast still holds for messages it will not create. Call it once the
    blast's row is locked by an UPDATE of this transaction (no one else changes it meanwhile)."""
    held = await session.scalar(select(Blast.credits_held).where(Blast.id == blast_id))
    if held:
        await session.execute(
            update(Blast)
            .where(Blast.id == blast_id)
            .values(credits_held=0)
            .execution_options(synchronize_session=False)
        )
        await credits.unreserve(session, organization_id, held)


async def finish_if_done(session: AsyncSession, blast_id: UUID) -> bool:
    """Complete the blast once every message is out of flight; True when the blast has ended."""
    async with write_transaction(session):
        current = await session.scalar(select(Blast.state).where(Blast.id == blast_id))
        if current is None or current in (BlastState.COMPLETED, BlastState.CANCELLED):
            return True
        if current != BlastState.SENDING or await in_flight(session, blast_id):
            return False
        org = await session.scalar(
            update(Blast)
            .where(Blast.id == blast_id, Blast.state == BlastState.SENDING)
            .values(state=BlastState.COMPLETED, completed_at=utcnow(), updated_at=utcnow())
            .returning(Blast.organization_id)
            .execution_options(synchronize_session=False)
        )
        if org is not None:  # recipients deleted before their message was created still hold a credit
            await release_held(session, blast_id, org)
            if (data := await payload(session, blast_id)) is not None:
                await emit_now(session, org, "blast.completed", data)  # in the completing transaction
        return True


async def take_pending(session: AsyncSession, blast_id: UUID, stale_after: float) -> list[UUID]:
    """The blast's messages not yet handed to the coordinator that this step will hand on, oldest first.

    Taking one renews its ``updated_at``: the sweep's recovery of lost PENDING messages leaves it alone
    while a live step works on it (a step lasts a third of ``stale_after``). A message left longer
    than three times that by a step that died, and not recovered by the sweep meanwhile, is taken too.
    """
    now = utcnow()
    ids = list(
        await session.scalars(
            select(Message.id)
            .where(Message.blast_id == blast_id, Message.state == MessageState.PENDING)
            .order_by(Message.created_at)
            .limit(BATCH)
        )
    )
    if not ids:
        return []
    result = await session.execute(
        update(Message)
        .where(
            Message.id.in_(ids),
            Message.state == MessageState.PENDING,
            # fresh ones are this chain's own; stale ones are the sweep's, unless it is lost too
            or_(
                Message.updated_at >= now - timedelta(seconds=stale_after),
                Message.updated_at < now - timedelta(seconds=3 * stale_after),
            ),
        )
        .values(updated_at=now)
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


async def step(
    sessions: Sessions, coordinator: Coordinator, blast_id: UUID, generation: int, stale_after: float
) -> tuple[bool, bool]:
    """One step of the fan-out, lasting about a third of ``stale_after`` (its claim keeps the blast
    fresh for ``blast_tick``): (whether another step should follow, whether it should follow at once)."""
    async with sessions() as session, write_transaction(session):
        blast = await claim(session, blast_id, generation)
        if blast is None:
            return False, False
        waiting = await take_pending(session, blast_id, stale_after)
        if blast.state == BlastState.FANNING_OUT and len(waiting) < BATCH:
            room = WINDOW - await in_flight(session, blast_id)
            if room > 0:
                await create_batch(session, blast, min(BATCH, room))
                waiting = await take_pending(session, blast_id, stale_after)
    deadline = time.monotonic() + stale_after / 3
    handed = 0
    for message_id in waiting:  # a cancel meanwhile has failed them: dispatch leaves them be
        if time.monotonic() > deadline:
            break
        try:  # dispatch reads, then writes: on SQLite it must hold the write lock from the start
            async with sessions() as session, write_transaction(session):
                await coordinator.dispatch(session, message_id)
            handed += 1
        except Exception as exc:  # left PENDING: the next step hands it on
            log.warning("blast message not dispatched", message_id=str(message_id), error=repr(exc)[:300])
    async with sessions() as session:
        ended = await finish_if_done(session, blast_id)
    return not ended, handed > 0
