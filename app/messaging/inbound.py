"""Inbound messages: stored once, tied to the conversation, and read for opt-out keywords.

The sender is resolved inside the organization by the service's address field (a phone compared
in E.164); an unknown sender becomes a contact flagged ``is_unknown``. The message is stored as
``direction: incoming``, ``MSG_RECEIVED``, with ``reply_to`` the latest outgoing message to that
contact that reached them, which becomes ``MSG_REPLIED``. STOP (and the other opt-out words)
through any service opts the contact out of the whole organization; START opts them back in. The
keyword message itself stays in the conversation.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from advanced_alchemy.exceptions import NotFoundError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts.fields import FieldError
from app.contacts.links import contact_of
from app.contacts.optout import opt_keyword
from app.contacts.services import ContactService
from app.errors import ValidationProblem
from app.logging import get_logger
from app.messaging import state
from app.messaging.events import message_payload
from app.messaging.models import Direction, Message, MessageState
from app.plugins.base import AddressField, Inbound
from app.tenants.deps import scoped
from app.webhooks.outbox import emit

log = get_logger(__name__)

#: outgoing states in which the contact may have read the message, so a reply can answer it
ANSWERABLE = (
    MessageState.SENT,
    MessageState.DELIVERED_SERVICE,
    MessageState.DELIVERED_USER,
    MessageState.READ,
    MessageState.REPLIED,
)
MAX_CONTENT = 10_000


@dataclass(frozen=True)
class Received:
    message_id: UUID | None
    contact_id: UUID | None
    duplicate: bool = False
    opted: str | None = None  # "opt_out" / "opt_in" when the message was a keyword that changed the contact


async def _existing(session: AsyncSession, organization_id: UUID, service: str, provider_id: str) -> Message | None:
    return await session.scalar(
        select(Message).where(
            Message.organization_id == organization_id,
            Message.service == service,
            Message.provider_message_id == provider_id,
            Message.direction == Direction.INCOMING,
        )
    )


async def apply_inbound(
    session: AsyncSession, organization_id: UUID, service: str, address_field: AddressField, inbound: Inbound
) -> Received:
    """Store one inbound message and apply what it means; commits."""
    provider_id = (inbound.provider_message_id or "").strip()[:255] or None
    if provider_id and (seen := await _existing(session, organization_id, service, provider_id)):
        received = Received(seen.id, seen.contact_id, duplicate=True)
        await session.rollback()
        return received
    contacts = scoped(ContactService, session, organization_id)
    contact = await contacts.find_by_address(address_field, inbound.address)
    if contact is None:
        try:
            address = contacts.normalise_address(address_field, inbound.address)
            contact = await contacts.create_unknown(address_field, address)
        except (FieldError, ValidationProblem) as exc:
            log.warning("inbound message from an address that cannot be a contact", service=service, error=str(exc))
            await session.rollback()
            return Received(None, None)
    reply_to = await session.scalar(
        select(Message.id)
        .where(
            Message.organization_id == organization_id,
            Message.contact_id == contact.id,
            Message.direction == Direction.OUTGOING,
            Message.state.in_(ANSWERABLE),
        )
        .order_by(Message.created_at.desc())
        .limit(1)
    )
    message = Message(
        organization_id=organization_id,
        contact_id=contact.id,
        direction=Direction.INCOMING,
        state=MessageState.RECEIVED,
        service=service,
        route=[],
        content=inbound.content[:MAX_CONTENT],
        reply_to_id=reply_to,
        provider_message_id=provider_id,
    )
    session.add(message)
    try:
        await session.flush()
    except IntegrityError:  # the provider's retry raced this one: it is stored once
        await session.rollback()
        seen = await _existing(session, organization_id, service, provider_id) if provider_id else None
        received = Received(seen.id if seen else None, seen.contact_id if seen else None, duplicate=True)
        await session.rollback()
        return received
    emit(session, organization_id, "message.received", message_payload(message))
    if reply_to is not None:
        await state.move(session, reply_to, MessageState.REPLIED)
    opted = None
    if keyword := opt_keyword(inbound.content):
        before = contact.opted_out
        opting_out = keyword == "opt_out"
        await contacts.set_opt_out(contact.id, opting_out, via=service)
        opted = keyword if before != opting_out else None
    message_id, contact_id = message.id, contact.id
    await session.commit()
    return Received(message_id, contact_id, opted=opted)


async def apply_link(
    session: AsyncSession, organization_id: UUID, secret_key: str, token: str, chat_id: str
) -> UUID | None:
    """Telegram ``/start <token>``: set that chat on the contact the token was issued for; commits.
    The contact's id, or None for a token that is not this organization's (ignored)."""
    contact_id = contact_of(secret_key, organization_id, token)
    if contact_id is None:
        await session.rollback()
        return None
    contacts = scoped(ContactService, session, organization_id)
    try:
        await contacts.update_contact(contact_id, {"telegram_chat_id": chat_id})
    except (NotFoundError, ValidationProblem) as exc:  # a deleted contact, or a chat id the rules refuse
        log.warning("telegram link not applied", error=repr(exc))
        await session.rollback()
        return None
    await session.commit()
    return contact_id
