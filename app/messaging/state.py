"""The message state machine: the one module that writes ``message.state``.

Outgoing messages move only forward along PENDING → SENDING → SENT → DELIVERED_SERVICE →
DELIVERED_USER → READ → REPLIED; FAILED is reachable from PENDING and SENDING. Every transition
is a conditional UPDATE (``WHERE state IN <allowed predecessors>``), so concurrent coordinators,
late receipts and repeated events can never move a message backwards or twice. :func:`move` moves one
message, :func:`move_many` (:func:`move_many_rows`) a batch (blast traffic, accepts written together) by
the same rule in one statement; both write the ``message.state_changed`` webhook events of what they moved
in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import utcnow
from app.messaging.events import COLUMNS, message_payload
from app.messaging.models import Message, MessageState
from app.webhooks.outbox import emit_many, emit_now

S = MessageState
FORWARD: tuple[MessageState, ...] = (
    S.PENDING,
    S.SENDING,
    S.SENT,
    S.DELIVERED_SERVICE,
    S.DELIVERED_USER,
    S.READ,
    S.REPLIED,
)
RANK = {state: i for i, state in enumerate(FORWARD)}
#: states in which the chain is still being worked through
IN_FLIGHT = frozenset({S.PENDING, S.SENDING})


def predecessors(new: MessageState) -> frozenset[MessageState]:
    """The states a message may be in to move to ``new``."""
    if new == S.FAILED:
        return frozenset({S.PENDING, S.SENDING})
    if new == S.SENDING:  # also SENDING → SENDING: the chain moved on to its next service
        return frozenset({S.PENDING, S.SENDING})
    if new in RANK:
        return frozenset(s for s in FORWARD if RANK[s] < RANK[new])
    return frozenset()  # MSG_RECEIVED is only ever a starting state


def can_move(old: MessageState, new: MessageState) -> bool:
    return old in predecessors(new)


async def move(session: AsyncSession, message_id: UUID, new: MessageState, **values: Any) -> bool:
    """Move the message to ``new`` if that is forward from where it is; True when it moved.

    A move writes its ``message.state_changed`` webhook event in the same transaction (the row read back
    by RETURNING, then one INSERT into the outbox)."""
    return await move_row(session, message_id, new, **values) is not None


async def move_row(session: AsyncSession, message_id: UUID, new: MessageState, **values: Any) -> Any:
    """:func:`move`, answering the message's columns as they are after the move (None if it did not move)."""
    allowed = predecessors(new)
    if not allowed:
        return None
    result = await session.execute(
        update(Message)
        .where(Message.id == message_id, Message.state.in_(allowed))
        .values(state=new, updated_at=utcnow(), **values)
        .returning(*COLUMNS)
        .execution_options(synchronize_session=False)
    )
    row = result.mappings().first()
    return row if await _emit_moved(session, row) else None


async def _emit_moved(session: AsyncSession, row: Any) -> bool:
    if row is None:
        return False
    await emit_now(session, row["organization_id"], "message.state_changed", message_payload(row))
    return True


async def move_many(session: AsyncSession, message_ids: Sequence[UUID], new: MessageState, **values: Any) -> list[UUID]:
    """:func:`move_many_rows`: the ids of those that moved."""
    return [row["id"] for row in await move_many_rows(session, message_ids, new, **values)]


async def move_many_rows(
    session: AsyncSession, message_ids: Sequence[UUID], new: MessageState, **values: Any
) -> list[Any]:
    """:func:`move` for many messages in one conditional UPDATE; the columns of those that moved, as they
    are after the move.

    The same rule as :func:`move` (batching changes how many rows a statement moves, not who may move them),
    and the same ``message.state_changed`` events, written in one multi-row INSERT (those no endpoint
    subscribes to are not written: :func:`app.webhooks.outbox.emit_many`). ``values`` may hold SQL
    expressions (a ``CASE`` on the id gives each message its own provider id)."""
    allowed = predecessors(new)
    if not allowed or not message_ids:
        return []
    result = await session.execute(
        update(Message)
        .where(Message.id.in_(list(message_ids)), Message.state.in_(allowed))
        .values(state=new, updated_at=utcnow(), **values)
        .returning(*COLUMNS)
        .execution_options(synchronize_session=False)
    )
    rows = list(result.mappings())
    await emit_many(session, "message.state_changed", [(row["organization_id"], row) for row in rows], message_payload)
    return rows


async def move_back_for_fallback(session: AsyncSession, message_id: UUID, provider_message_id: str) -> bool:
    """The one backward move, made only by the coordinator: the service that sent the message reports
    it undelivered (a late failure), so the chain goes on to its next service. Conditional on the
    message still being where that service left it (``SENT`` or ``DELIVERED_SERVICE`` with that
    provider id): a receipt for an attempt that is no longer the current one moves nothing."""
    result = await session.execute(
        update(Message)
        .where(
            Message.id == message_id,
            Message.state.in_((S.SENT, S.DELIVERED_SERVICE)),
            Message.provider_message_id == provider_message_id,
        )
        .values(state=S.SENDING, provider_message_id=None, sent_at=None, updated_at=utcnow())
        .returning(*COLUMNS)
        .execution_options(synchronize_session=False)
    )
    return await _emit_moved(session, result.mappings().first())
