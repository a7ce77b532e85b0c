"""Writing events: :func:`emit` adds one outbox row to the session of the change that caused it, so the
event commits (or rolls back) with it. No Redis here: the dispatcher (app/webhooks/jobs.py) moves
committed events to the queue."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import utcnow
from app.webhooks.models import EVENT_TYPES, PING, WebhookEndpoint, WebhookEvent


def _check(type_: str) -> None:
    if type_ not in EVENT_TYPES and type_ != PING:  # pragma: no cover - a programming error
        raise ValueError(f"unknown webhook event type {type_!r}")


def emit(session: AsyncSession, organization_id: UUID, type_: str, data: dict[str, Any]) -> WebhookEvent:
    """Add the event ``type_`` with ``data`` (JSON-able builtins) to the session's transaction."""
    _check(type_)
    event = WebhookEvent(organization_id=organization_id, type=type_, payload=data)
    session.add(event)
    return event


async def emit_now(session: AsyncSession, organization_id: UUID, type_: str, data: dict[str, Any]) -> None:
    """:func:`emit` as one INSERT executed at once (for code that writes with Core statements)."""
    _check(type_)
    now = utcnow()
    await session.execute(
        insert(WebhookEvent).values(
            organization_id=organization_id, type=type_, payload=data, created_at=now, updated_at=now
        )
    )


async def wanted_by(session: AsyncSession, organization_ids: Sequence[UUID], type_: str) -> set[UUID]:
    """The organizations among these that have an enabled endpoint subscribed to ``type_``."""
    if not organization_ids:
        return set()
    rows = await session.execute(
        select(WebhookEndpoint.organization_id, WebhookEndpoint.event_types).where(
            WebhookEndpoint.organization_id.in_(set(organization_ids)), WebhookEndpoint.enabled
        )
    )
    return {org for org, types in rows if type_ in (types or [])}


async def emit_many(
    session: AsyncSession,
    type_: str,
    events: Sequence[tuple[UUID, Any]],
    build: Callable[[Any], dict[str, Any]] | None = None,
) -> int:
    """:func:`emit_now` for many ``(organization_id, data)`` events in one multi-row INSERT (bulk paths:
    blasts). An event that no enabled endpoint of its organization subscribes to is not written: the
    dispatcher would delete it unread (``delivery.fan_out``), and a blast would write hundreds of thousands.
    ``build`` turns each item into its ``data`` (called only for the events written). Returns their number."""
    _check(type_)
    wanted = await wanted_by(session, [org for org, _ in events], type_)
    now = utcnow()
    rows = [
        {
            "organization_id": org,
            "type": type_,
            "payload": build(item) if build else item,
            "created_at": now,
            "updated_at": now,
        }
        for org, item in events
        if org in wanted
    ]
    if rows:
        await session.execute(insert(WebhookEvent), rows)
    return len(rows)
