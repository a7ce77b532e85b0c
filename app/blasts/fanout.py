"""The fan-out of a blast, one step at a time (docs/decisions/0022-blast-fan-out.md, 0029-blast-throughput.md).

A step claims the blast (``generation`` compare-and-set: one chain of steps at a time, a stale or
repeated job changes nothing). The first step snapshots the audience the POST counted into
``blast_recipient``. Each later one, in one transaction, creates at most one batch of messages for the
next recipients in key order (rendered per contact, one multi-row INSERT, the blast's reserved credits
passed on to them, the cursor moved) and hands them to the coordinator's bulk path (attempts in one
INSERT, one move to MSG_SENDING), then enqueues their ``send_batch`` jobs. The number of messages of a
blast in flight is bounded (:data:`WINDOW`), so the blast queue never holds a whole blast: other blasts
get their turn, and a cancel still finds most of the audience not yet sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID, uuid4

import anyio
from advanced_alchemy.types import GUID
from sqlalchemy import ColumnElement, delete, false, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import noload

from app import metrics
from app.blasts.models import Blast, BlastState, blast_recipient
from app.blasts.present import payload
from app.clock import utcnow
from app.contacts.models import Contact, contact_category
from app.db.config import write_transaction
from app.errors import PaymentRequired
from app.logging import get_logger
from app.messaging import bulk, credits, state, templating
from app.messaging.coordinator import Coordinator
from app.messaging.models import CreditState, Direction, Message, MessageState
from app.messaging.services import MessageRepository
from app.webhooks.outbox import emit_now

log = get_logger(__name__)

#: messages created (and handed on) per step, in one transaction
BATCH = 250
#: messages of one blast pending or sending at once
WINDOW = 1000
#: seconds before the next step while the window is full, and once every message is created
FULL_DELAY = 0.2
IDLE_DELAY = 1.0

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


def members(organization_id: UUID, contact_ids: Sequence[Any], category_ids: Sequence[Any]) -> ColumnElement[bool]:
    """The union of the contacts and the members of the categories, in this organization."""
    parts: list[ColumnElement[bool]] = []
    if contact_ids:
        parts.append(Contact.id.in_([UUID(str(i)) for i in set(contact_ids)]))
    if category_ids:
        categories = [UUID(str(i)) for i in category_ids]
        belong = select(contact_category.c.contact_id).where(contact_category.c.category_id.in_(categories))
        parts.append(Contact.id.in_(belong))
    return (Contact.organization_id == organization_id) & (or_(*parts) if parts else false())


async def snapshot(session: AsyncSession, blast: Blast) -> None:
    """The audience the POST counted, written into ``blast_recipient`` (one INSERT … SELECT; each contact once
    by its primary key) by the first step. Contacts created after the blast are not part of it; if the
    audience changed meanwhile (a contact opted out, deleted, or added to a category), the blast's audience
    and reserved credits follow, and recipients for whom no credit can be reserved (pay in advance) are
    left out."""
    selection = blast.selection or {}
    who = members(blast.organization_id, selection.get("contact_ids", []), selection.get("category_ids", []))
    result = await session.execute(
        insert(blast_recipient).from_select(
            ["blast_id", "contact_id"],
            # in key order: the primary key's index is appended to, not split at random
            select(literal(blast.id, GUID), Contact.id)
            .where(who, Contact.opted_out.is_(False), Contact.created_at <= blast.created_at)
            .order_by(Contact.id),
        )
    )
    count = int(result.rowcount)  # type: ignore[attr-defined]
    delta = count - blast.audience
    if delta > 0:
        try:
            await credits.reserve(session, blast.organization_id, delta)
        except PaymentRequired:
            extra = (
                select(blast_recipient.c.contact_id)
                .where(blast_recipient.c.blast_id == blast.id)
                .order_by(blast_recipient.c.contact_id.desc())
                .limit(delta)
            )
            await session.execute(
                delete(blast_recipient).where(
                    blast_recipient.c.blast_id == blast.id, blast_recipient.c.contact_id.in_(extra)
                )
            )
            log.info("blast audience grew beyond its credits", blast_id=str(blast.id), left_out=delta)
            delta = 0
    elif delta < 0:
        await credits.unreserve(session, blast.organization_id, -delta)
    await session.execute(
        update(Blast)
        .where(Blast.id == blast.id)
        .values(
            selection=None,
            audience=Blast.audience + delta,
            credits_held=Blast.credits_held + delta,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


async def stopped(session: AsyncSession, blast_ids: set[UUID]) -> set[UUID]:
    """The blasts among these that must send nothing more (cancelled): the coordinator's ``stopped_blasts``."""
    if not blast_ids:
        return set()
    found = await session.scalars(
        select(Blast.id).where(Blast.id.in_(list(blast_ids)), Blast.state == BlastState.CANCELLED)
    )
    return set(found)


def _render_all(content: str, values: list[dict[str, str]]) -> list[str | templating.TemplateProblem]:
    out: list[str | templating.TemplateProblem] = []
    for v in values:
        try:
            out.append(templating.render_values(content, v))
        except templating.TemplateProblem as exc:
            out.append(exc)
    return out


async def create_batch(session: AsyncSession, blast: Blast, size: int) -> tuple[list[UUID], bool]:
    """Messages for the next ``size`` recipients: the ids of those to hand to the coordinator, and whether
    every recipient has its message now."""
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
    return ready, len(contacts) < size


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


async def step(sessions: Sessions, coordinator: Coordinator, blast_id: UUID, generation: int) -> float | None:
    """One step of the fan-out: seconds until the next one should run, or None when the blast has ended.

    Creating a batch, handing it on (its attempts, its move to MSG_SENDING) and moving the cursor commit
    together, so a step killed half-way changes nothing; its send jobs are enqueued once committed (a job
    lost in between is found again by the sweep, from its attempts' ``job_key``)."""
    delay = IDLE_DELAY
    async with sessions() as session, write_transaction(session):
        blast = await claim(session, blast_id, generation)
        if blast is None:
            return None
        if blast.selection is not None:
            await snapshot(session, blast)
            return 0.0
        fanning_out = blast.state == BlastState.FANNING_OUT
        created: list[UUID] = []
        if fanning_out:
            room = WINDOW - await in_flight(session, blast_id)
            delay = FULL_DELAY
            if room > 0:
                created, done = await create_batch(session, blast, min(BATCH, room))
                fanning_out, delay = not done, 0.0
        # and any message of the blast still pending (one a hand-off left behind)
        left = await session.scalars(
            select(Message.id)
            .where(Message.blast_id == blast_id, Message.state == MessageState.PENDING, Message.id.not_in(created))
            .limit(BATCH)
        )
        batches = await bulk.hand_off(coordinator, session, [*created, *left])
    await bulk.enqueue_batches(coordinator, batches)
    if fanning_out:
        return delay
    async with sessions() as session:
        ended = await finish_if_done(session, blast_id)
    return None if ended else delay
