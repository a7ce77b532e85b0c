"""A contact's conversation: both directions oldest first, and a reply that answers the latest incoming
message (through the contact's chain: the contact's default, else the organization's)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from uuid import UUID

from advanced_alchemy.filters import LimitOffset, OrderBy
from sqlalchemy import select

from app.errors import ValidationProblem
from app.messaging import schemas
from app.messaging.coordinator import Coordinator
from app.messaging.models import Direction, Message
from app.messaging.services import MessageService
from app.messaging.templating import MAX_CONTENT

OLDEST = OrderBy(field_name="created_at", sort_order="asc")
PAGE_SIZE = 50


@dataclass(frozen=True)
class Thread:
    """One page of a conversation; the last page (the newest messages) unless another was asked for."""

    items: list[Message]
    total: int
    number: int
    pages: int
    size: int

    @property
    def is_latest(self) -> bool:
        return self.number == self.pages


async def thread(
    messages: MessageService, contact_id: UUID, number: str | None = None, size: int = PAGE_SIZE
) -> Thread:
    """Page ``number`` (1-based, clamped; anything unusable or none: the last page) of the conversation."""
    total = await messages.count(Message.contact_id == contact_id)
    pages = max(1, math.ceil(total / size))
    try:
        current = min(max(int(number), 1), pages) if number else pages
    except ValueError:
        current = pages
    window = LimitOffset(limit=size, offset=(current - 1) * size)
    items = list(await messages.list(Message.contact_id == contact_id, window, OLDEST))
    return Thread(items=items, total=total, number=current, pages=pages, size=size)


async def latest_incoming(messages: MessageService, contact_id: UUID) -> UUID | None:
    """The newest message the contact sent, which a reply answers."""
    return await messages.session.scalar(
        select(Message.id)
        .where(
            Message.organization_id == messages.organization_id,
            Message.contact_id == contact_id,
            Message.direction == Direction.INCOMING,
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )


async def reply(
    messages: MessageService,
    coordinator: Coordinator,
    contact_id: UUID,
    content: str,
    idempotency_key: str | None = None,
) -> tuple[Message, bool]:
    """Send ``content`` to the contact as the answer to their latest message; (message, replayed).

    The chain is the contact's default, else the organization's (:meth:`ServicechainService.resolve`);
    the rules, the credit and the start on the chain are :meth:`MessageService.submit`'s.
    """
    if not content.strip():
        raise ValidationProblem("Write the message.", "content")
    if len(content) > MAX_CONTENT:
        raise ValidationProblem(f"At most {MAX_CONTENT} characters.", "content")
    reply_to = await latest_incoming(messages, contact_id)
    data = schemas.MessageCreate(contact_id=contact_id, content=content, reply_to=reply_to)
    return await messages.submit(data, idempotency_key, coordinator=coordinator)
