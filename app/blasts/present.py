"""A blast as the API returns it (stats, progress), for the API and for the ``blast.completed`` event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.blasts import schemas
from app.blasts.models import Blast, BlastState
from app.messaging import state
from app.messaging.models import Message, MessageState

OUTGOING_STATES = [s.value for s in MessageState if s != MessageState.RECEIVED]


async def state_counts(
    session: AsyncSession, organization_id: UUID | None, blast_ids: Sequence[UUID]
) -> dict[UUID, dict[str, int]]:
    """Messages per state of each blast, in one query (``organization_id`` None: the instance's)."""
    query = select(Message.blast_id, Message.state, func.count()).where(Message.blast_id.in_(list(blast_ids)))
    if organization_id is not None:
        query = query.where(Message.organization_id == organization_id)
    rows = await session.execute(query.group_by(Message.blast_id, Message.state))
    out: dict[UUID, dict[str, int]] = {i: {} for i in blast_ids}
    for blast_id, message_state, count in rows:
        out[blast_id][MessageState(message_state).value] = int(count)
    return out


RUNNING = (BlastState.FANNING_OUT, BlastState.SENDING)


async def running(session: AsyncSession, organization_id: UUID | None, limit: int = 10) -> list[schemas.Blast]:
    """The blasts in progress (fanning out or sending), newest first, with their progress: the dashboard's
    (an organization's, or for ``organization_id`` None the instance's)."""
    query = select(Blast).where(Blast.state.in_(RUNNING)).order_by(Blast.created_at.desc()).limit(limit)
    if organization_id is not None:
        query = query.where(Blast.organization_id == organization_id)
    blasts = list(await session.scalars(query))
    counts = await state_counts(session, organization_id, [b.id for b in blasts]) if blasts else {}
    return [present(b, counts[b.id]) for b in blasts]


async def latest_change(session: AsyncSession, organization_id: UUID | None) -> Any:
    """When a blast last changed (a live page's version)."""
    query = select(func.max(Blast.updated_at))
    if organization_id is not None:
        query = query.where(Blast.organization_id == organization_id)
    return await session.scalar(query)


async def payload(session: AsyncSession, blast_id: UUID) -> dict[str, Any] | None:
    """The blast as the API returns it, as JSON-able builtins (an event's ``data``)."""
    blast = await session.get(Blast, blast_id, populate_existing=True)
    if blast is None:
        return None
    counts = await state_counts(session, blast.organization_id, [blast.id])
    return dict(msgspec.to_builtins(present(blast, counts[blast.id])))


def present(blast: Blast, counts: dict[str, int]) -> schemas.Blast:
    created = sum(counts.values())
    finished = created - sum(counts.get(s.value, 0) for s in state.IN_FLIGHT)
    stats = {name: counts.get(name, 0) for name in OUTGOING_STATES}
    stats["skipped_opted_out"] = blast.skipped_opted_out
    stats["not_created"] = blast.audience - created if blast.state == BlastState.CANCELLED else 0
    return schemas.Blast(
        id=blast.id,
        organization_id=blast.organization_id,
        name=blast.name,
        content=blast.content,
        servicechain_id=blast.servicechain_id,
        state=blast.state.value,
        send_at=blast.send_at,
        audience=blast.audience,
        skipped_opted_out=blast.skipped_opted_out,
        stats=stats,
        progress=round(finished / blast.audience, 4) if blast.audience else 1.0,
        started_at=blast.started_at,
        completed_at=blast.completed_at,
        created_by=blast.created_by,
        created_at=blast.created_at,
        updated_at=blast.updated_at,
    )
