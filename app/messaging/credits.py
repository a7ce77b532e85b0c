"""Credits: one reserved when a message is accepted, charged once when a service sends it,
released when it fails. A ``PAY_IN_ADVANCE`` organization cannot reserve beyond its balance;
a ``PAYG`` one is billed afterwards, so its balance may go below zero.

Every change is one conditional UPDATE, safe under concurrent web processes and workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.services import record
from app.errors import PaymentRequired
from app.messaging.models import CreditState, Message
from app.tenants.models import Organization, Plan


async def reserve(session: AsyncSession, organization_id: UUID, count: int = 1) -> None:
    result = await session.execute(
        update(Organization)
        .where(
            Organization.id == organization_id,
            or_(Organization.plan == Plan.PAYG, Organization.credits - Organization.credits_reserved >= count),
        )
        .values(credits_reserved=Organization.credits_reserved + count)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise PaymentRequired("Not enough credits: this organization pays in advance and has none left.")


async def _settle(session: AsyncSession, message_id: UUID, to: CreditState) -> bool:
    """Move the message's credit from RESERVED to ``to`` exactly once; True if this call did it."""
    result = await session.execute(
        update(Message)
        .where(Message.id == message_id, Message.credit == CreditState.RESERVED)
        .values(credit=to)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def charge(session: AsyncSession, message_id: UUID, organization_id: UUID) -> None:
    if await _settle(session, message_id, CreditState.CHARGED):
        await session.execute(
            update(Organization)
            .where(Organization.id == organization_id)
            .values(credits=Organization.credits - 1, credits_reserved=Organization.credits_reserved - 1)
            .execution_options(synchronize_session=False)
        )


async def release(session: AsyncSession, message_id: UUID, organization_id: UUID) -> None:
    if await _settle(session, message_id, CreditState.RELEASED):
        await session.execute(
            update(Organization)
            .where(Organization.id == organization_id)
            .values(credits_reserved=Organization.credits_reserved - 1)
            .execution_options(synchronize_session=False)
        )


async def unreserve(session: AsyncSession, organization_id: UUID, count: int) -> None:
    """Give back ``count`` reserved credits that no message holds (a blast's unused reservation)."""
    if count:
        await session.execute(
            update(Organization)
            .where(Organization.id == organization_id)
            .values(credits_reserved=Organization.credits_reserved - count)
            .execution_options(synchronize_session=False)
        )


async def _settle_many(
    session: AsyncSession, organization_id: UUID, message_ids: Sequence[UUID], to: CreditState
) -> int:
    """:func:`_settle` for many messages of one organization in one UPDATE; how many this call settled."""
    if not message_ids:
        return 0
    result = await session.execute(
        update(Message)
        .where(
            Message.id.in_(list(message_ids)),
            Message.organization_id == organization_id,
            Message.credit == CreditState.RESERVED,
        )
        .values(credit=to)
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.scalars().all())


async def release_many(session: AsyncSession, organization_id: UUID, message_ids: Sequence[UUID]) -> int:
    """:func:`release` for many messages: one UPDATE of the messages, one of the organization's row."""
    released = await _settle_many(session, organization_id, message_ids, CreditState.RELEASED)
    await unreserve(session, organization_id, released)
    return released


async def charge_many(session: AsyncSession, organization_id: UUID, message_ids: Sequence[UUID]) -> int:
    """:func:`charge` for many messages: one UPDATE of the messages, one of the organization's row (a hot
    spot: one lock per batch, never one per message)."""
    charged = await _settle_many(session, organization_id, message_ids, CreditState.CHARGED)
    if charged:
        await session.execute(
            update(Organization)
            .where(Organization.id == organization_id)
            .values(credits=Organization.credits - charged, credits_reserved=Organization.credits_reserved - charged)
            .execution_options(synchronize_session=False)
        )
    return charged


async def add(session: AsyncSession, organization_id: UUID, amount: int) -> None:
    await session.execute(
        update(Organization)
        .where(Organization.id == organization_id)
        .values(credits=Organization.credits + amount)
        .execution_options(synchronize_session=False)
    )
    summary = f"credits (+{amount})"
    record(
        session, "organization.credits_added", "organization", organization_id, summary, organization_id=organization_id
    )
