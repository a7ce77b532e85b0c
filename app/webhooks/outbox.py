"""Writing events: :func:`emit` adds one outbox row to the session of the change that caused it, so the
event commits (or rolls back) with it. No Redis here: the dispatcher (app/webhooks/jobs.py) moves
committed events to the queue."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import utcnow
from app.webhooks.models import EVENT_TYPES, PING, WebhookEvent


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
