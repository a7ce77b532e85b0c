"""Delivery receipts, applied forward only; a late failure moves the chain on.

A receipt names the provider's message id. The attempt that got that id is looked up inside the
organization and service the hook was called for, so another organization's hook URL can never
touch this organization's messages. Forward receipts go through :func:`state.move` (a repeated or
late one moves nothing); an ``undelivered``/``failed`` receipt for the attempt that sent the message
marks that attempt ``undelivered`` and hands the message back to the coordinator, which starts the
next service of the chain (or fails the message). The credit stays charged once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal
from uuid import UUID

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.clock import utcnow
from app.logging import get_logger
from app.messaging import state
from app.messaging.models import Attempt, AttemptOutcome, Message, MessageState
from app.plugins.base import Receipt
from app.queues import EVENTS_QUEUE, RECEIPT_REPLAY_DELAYS, RECEIPT_REPLAY_OPTIONS

if TYPE_CHECKING:
    from app.messaging.coordinator import Coordinator

log = get_logger(__name__)

Applied = Literal["moved", "unchanged", "fell_back", "unknown"]


async def find_attempt(
    session: AsyncSession, organization_id: UUID, service: str, provider_message_id: str
) -> Attempt | None:
    return await session.scalar(
        select(Attempt)
        .where(
            Attempt.organization_id == organization_id,
            Attempt.service == service,
            Attempt.provider_message_id == provider_message_id,
        )
        .order_by(Attempt.started_at.desc())
        .limit(1)
    )


async def apply_receipt(
    session: AsyncSession, coordinator: Coordinator, organization_id: UUID, service: str, receipt: Receipt
) -> Applied:
    """Apply one receipt; commits. What it did, for the log and the tests."""
    attempt = await find_attempt(session, organization_id, service, receipt.provider_message_id)
    if attempt is None:
        log.info("receipt for an unknown provider message id", service=service, provider_id=receipt.provider_message_id)
        await session.rollback()
        return "unknown"
    message = await session.get(Message, attempt.message_id)
    if message is None:  # pragma: no cover - the attempt row cascades with its message
        await session.rollback()
        return "unknown"
    current = message.service == service and message.provider_message_id == attempt.provider_message_id
    if receipt.state == MessageState.FAILED:
        return await _late_failure(session, coordinator, attempt, message, receipt, current)
    moved = current and await state.move(session, message.id, MessageState(receipt.state))
    await session.commit()
    return "moved" if moved else "unchanged"


async def _late_failure(
    session: AsyncSession,
    coordinator: Coordinator,
    attempt: Attempt,
    message: Message,
    receipt: Receipt,
    current: bool,
) -> Applied:
    detail = receipt.error or (f"error {receipt.error_code}" if receipt.error_code else None)
    error = f"undelivered: {detail}" if detail else "undelivered"
    result = await session.execute(
        update(Attempt)
        .where(Attempt.id == attempt.id, Attempt.outcome == AttemptOutcome.SENT)
        .values(outcome=AttemptOutcome.UNDELIVERED, error=error[:1000], updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]  # a repeated failure receipt
        await session.rollback()
        return "unchanged"
    provider_id = attempt.provider_message_id or ""
    reopened = current and await state.move_back_for_fallback(session, message.id, provider_id)
    await session.commit()
    metrics.attempt_finished(attempt.service, AttemptOutcome.UNDELIVERED)
    if not reopened:
        return "unchanged"
    session.expunge_all()  # the coordinator re-reads the message under its lock, not our stale copy
    await coordinator.dispatch(session, message.id)  # the next service, or MSG_FAILED
    return "fell_back"


async def replay_later(
    coordinator: Coordinator, organization_id: UUID, service: str, receipt: Receipt, tries: int = 0
) -> bool:
    """A receipt for an id no attempt has yet: the provider may have called back before the send job's
    own event recorded the id (a fast "sent" or "delivered"). Try it again later, a few times, then drop
    it (logged). False when it is given up."""
    if tries >= len(RECEIPT_REPLAY_DELAYS):
        log.info(
            "receipt dropped: no message has this provider id", service=service, provider_id=receipt.provider_message_id
        )
        return False
    payload = msgspec.to_builtins(receipt)
    try:
        await coordinator.queues[EVENTS_QUEUE].enqueue(
            "replay_receipt",
            organization_id=str(organization_id),
            service=service,
            receipt=payload,
            tries=tries + 1,
            key=f"receipt:{organization_id}:{service}:{receipt.provider_message_id}:{receipt.state}:{tries + 1}",
            scheduled=int(time.time()) + RECEIPT_REPLAY_DELAYS[tries],
            **RECEIPT_REPLAY_OPTIONS,
        )
    except Exception as exc:  # Redis away: the receipt is lost, as a provider that never called back would be
        log.warning("receipt replay not enqueued", service=service, error=repr(exc))
        return False
    return True


def receipt_of(payload: dict[str, object]) -> Receipt:
    return msgspec.convert(payload, Receipt)
