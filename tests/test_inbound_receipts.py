"""Receipts and inbound messages applied by the messaging domain, on both databases.

Messages are built as the pipeline leaves them (sent by a service, with its attempt); the receipts
and inbound messages are what a plugin's ``parse_webhook`` returns. The hook endpoint and the
provider protocols are tested in tests/test_hooks*.py against local provider servers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import utcnow
from app.config import Settings
from app.contacts.links import contact_of, link_token
from app.contacts.models import Contact
from app.messaging.coordinator import Coordinator
from app.messaging.inbound import apply_inbound, apply_link
from app.messaging.models import Attempt, AttemptOutcome, CreditState, Direction, Message, MessageState
from app.messaging.receipts import apply_receipt
from app.plugins.base import Inbound, Receipt
from app.queues import make_queues
from app.servicehost.registry import check_and_record, load_registry
from app.tenants.models import Organization, Plan
from tests.conftest import World

S = MessageState


@pytest.fixture
async def coordinator(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Coordinator]:
    """The coordinator as the app builds it: the real registry (checked and recorded) and queues."""
    registry = load_registry(settings)
    await check_and_record(registry, sessions)
    queues = make_queues(settings)
    for queue in queues.values():
        await queue.connect()
    try:
        yield Coordinator(settings=settings, registry=registry, queues=queues)
    finally:
        for queue in queues.values():
            await queue.disconnect()


async def _contact(sessions: async_sessionmaker[AsyncSession], org: Organization, **fields: Any) -> Contact:
    async with sessions() as session:
        contact = Contact(organization_id=org.id, first_name="Ann", phone="+447911123456", **fields)
        session.add(contact)
        await session.commit()
        return contact


async def _sent(
    sessions: async_sessionmaker[AsyncSession],
    org: Organization,
    contact: Contact,
    route: list[str],
    provider_id: str | None = None,
    state: MessageState = S.SENT,
) -> Message:
    """A message the first service of ``route`` sent (charged, one attempt with ``provider_id``)."""
    provider_id = provider_id or f"SM{uuid.uuid4().hex}"
    async with sessions() as session:
        message = Message(
            organization_id=org.id,
            contact_id=contact.id,
            state=state,
            service=route[0],
            route=route,
            content="Hello",
            provider_message_id=provider_id,
            sent_at=utcnow(),
            credit=CreditState.CHARGED,
        )
        session.add(message)
        await session.flush()
        session.add(
            Attempt(
                organization_id=org.id,
                message_id=message.id,
                seq=0,
                service=route[0],
                outcome=AttemptOutcome.SENT,
                provider_message_id=provider_id,
                started_at=utcnow(),
                finished_at=utcnow(),
            )
        )
        await session.commit()
        return message


async def _message(sessions: async_sessionmaker[AsyncSession], message_id: uuid.UUID) -> Message:
    async with sessions() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        return message


async def _attempts(sessions: async_sessionmaker[AsyncSession], message_id: uuid.UUID) -> list[tuple[str, str]]:
    async with sessions() as session:
        rows = await session.scalars(select(Attempt).where(Attempt.message_id == message_id).order_by(Attempt.seq))
        return [(a.service, a.outcome.value) for a in rows]


async def _receipt(sessions: Any, coordinator: Any, org: Organization, service: str, receipt: Receipt) -> str:
    async with sessions() as session:
        return str(await apply_receipt(session, coordinator, org.id, service, receipt))


async def test_receipts_move_forward_only(sessions: Any, world: World, coordinator: Any) -> None:
    org = await world.org()
    message = await _sent(sessions, org, await _contact(sessions, org), ["log"], "SM1")
    assert await _receipt(sessions, coordinator, org, "log", Receipt("SM1", "MSG_DELIVERED_USER")) == "moved"
    assert (await _message(sessions, message.id)).state == S.DELIVERED_USER
    # a late "read" moves on; a repeated or older receipt moves nothing back
    assert await _receipt(sessions, coordinator, org, "log", Receipt("SM1", "MSG_READ")) == "moved"
    assert await _receipt(sessions, coordinator, org, "log", Receipt("SM1", "MSG_DELIVERED_USER")) == "unchanged"
    assert await _receipt(sessions, coordinator, org, "log", Receipt("SM1", "MSG_DELIVERED_SERVICE")) == "unchanged"
    assert (await _message(sessions, message.id)).state == S.READ


async def test_receipt_for_unknown_id_or_other_org_changes_nothing(
    sessions: Any, world: World, coordinator: Any
) -> None:
    org, other = await world.org(), await world.org()
    message = await _sent(sessions, org, await _contact(sessions, org), ["log"], "SM2")
    assert await _receipt(sessions, coordinator, org, "log", Receipt("SMnope", "MSG_DELIVERED_USER")) == "unknown"
    # the same provider id through another organization's hook is not this organization's message
    assert await _receipt(sessions, coordinator, other, "log", Receipt("SM2", "MSG_DELIVERED_USER")) == "unknown"
    assert await _receipt(sessions, coordinator, other, "log", Receipt("SM2", "MSG_FAILED", error="30003")) == "unknown"
    # nor another service's
    assert await _receipt(sessions, coordinator, org, "smtp", Receipt("SM2", "MSG_FAILED", error="30003")) == "unknown"
    assert (await _message(sessions, message.id)).state == S.SENT
    assert await _attempts(sessions, message.id) == [("log", "sent")]


async def test_undelivered_receipt_moves_the_chain_on(sessions: Any, world: World, coordinator: Any) -> None:
    org = await world.org(plan=Plan.PAY_IN_ADVANCE, credits=5)
    message = await _sent(sessions, org, await _contact(sessions, org), ["log", "log"], "SM3")
    result = await _receipt(sessions, coordinator, org, "log", Receipt("SM3", "MSG_FAILED", error="30003"))
    assert result == "fell_back"
    after = await _message(sessions, message.id)
    # the second service of the chain has it now; the credit stays charged once
    assert after.state == S.SENDING and after.credit == CreditState.CHARGED
    assert await _attempts(sessions, message.id) == [("log", "undelivered"), ("log", "pending")]
    async with sessions() as session:
        first = await session.scalar(select(Attempt).where(Attempt.message_id == message.id, Attempt.seq == 0))
        assert first is not None and first.error == "undelivered: 30003"
    # the same failure receipt again changes nothing
    assert await _receipt(sessions, coordinator, org, "log", Receipt("SM3", "MSG_FAILED", error="30003")) == "unchanged"
    assert await _attempts(sessions, message.id) == [("log", "undelivered"), ("log", "pending")]


async def test_undelivered_with_no_service_left_fails_the_message(
    sessions: Any, world: World, coordinator: Any
) -> None:
    org = await world.org()
    message = await _sent(sessions, org, await _contact(sessions, org), ["log"], "SM4", state=S.DELIVERED_SERVICE)
    assert await _receipt(sessions, coordinator, org, "log", Receipt("SM4", "MSG_FAILED", error="30005")) == "fell_back"
    after = await _message(sessions, message.id)
    assert after.state == S.FAILED and after.failure_reason == "every service of the chain failed"
    assert after.credit == CreditState.CHARGED


async def test_failure_receipt_after_delivery_only_marks_the_attempt(
    sessions: Any, world: World, coordinator: Any
) -> None:
    org = await world.org()
    message = await _sent(sessions, org, await _contact(sessions, org), ["log", "log"], "SM5", state=S.DELIVERED_USER)
    assert await _receipt(sessions, coordinator, org, "log", Receipt("SM5", "MSG_FAILED")) == "unchanged"
    assert (await _message(sessions, message.id)).state == S.DELIVERED_USER


async def _inbound(sessions: Any, org: Organization, service: str, field: Any, inbound: Inbound) -> Any:
    async with sessions() as session:
        return await apply_inbound(session, org.id, service, field, inbound)


async def test_reply_links_to_the_latest_outgoing_message(sessions: Any, world: World) -> None:
    org = await world.org()
    contact = await _contact(sessions, org)
    older = await _sent(sessions, org, contact, ["log"])
    latest = await _sent(sessions, org, contact, ["log"], state=S.DELIVERED_USER)
    # a phone written another way is the same person (compared in E.164)
    got = await _inbound(sessions, org, "twilio", "phone", Inbound("+44 7911 123456", "Thanks!", "SMin1"))
    assert got.contact_id == contact.id and not got.duplicate
    reply = await _message(sessions, got.message_id)
    assert reply.direction == Direction.INCOMING and reply.state == S.RECEIVED and reply.service == "twilio"
    assert reply.reply_to_id == latest.id and reply.content == "Thanks!"
    assert (await _message(sessions, latest.id)).state == S.REPLIED
    assert (await _message(sessions, older.id)).state == S.SENT


async def test_duplicate_inbound_is_stored_once(sessions: Any, world: World) -> None:
    org = await world.org()
    await _contact(sessions, org)
    first = await _inbound(sessions, org, "twilio", "phone", Inbound("+447911123456", "Hi", "SMdup"))
    again = await _inbound(sessions, org, "twilio", "phone", Inbound("+447911123456", "Hi", "SMdup"))
    assert again.duplicate and again.message_id == first.message_id
    async with sessions() as session:
        rows = list(await session.scalars(select(Message).where(Message.provider_message_id == "SMdup")))
    assert len(rows) == 1


async def test_unknown_sender_becomes_an_unknown_contact_in_that_org_only(sessions: Any, world: World) -> None:
    org, other = await world.org(), await world.org()
    await _contact(sessions, other)  # the same number in another organization is not this sender
    got = await _inbound(sessions, org, "twilio", "phone", Inbound("+447911123456", "Who is this?", "SMu1"))
    async with sessions() as session:
        contact = await session.get(Contact, got.contact_id)
    assert contact is not None and contact.organization_id == org.id
    assert contact.is_unknown and contact.phone == "+447911123456"
    assert (await _message(sessions, got.message_id)).reply_to_id is None
    # an address that cannot be a contact is ignored, not a crash
    assert (await _inbound(sessions, org, "twilio", "phone", Inbound("not a number", "x", "SMu2"))).message_id is None


async def test_stop_and_start_through_two_services(sessions: Any, world: World) -> None:
    org = await world.org()
    contact = await _contact(sessions, org, telegram_chat_id="4242")
    got = await _inbound(sessions, org, "twilio", "phone", Inbound("+447911123456", "  stop ", "SMs1"))
    assert got.opted == "opt_out"
    async with sessions() as session:
        c = await session.get(Contact, contact.id)
        assert c is not None and c.opted_out and c.opted_out_via == "twilio" and c.opted_out_at is not None
    # the keyword itself stays in the conversation
    assert (await _message(sessions, got.message_id)).content == "  stop "
    back = await _inbound(sessions, org, "telegram", "telegram_chat_id", Inbound("4242", "START", "4242:7"))
    assert back.opted == "opt_in" and back.contact_id == contact.id
    async with sessions() as session:
        c = await session.get(Contact, contact.id)
        assert c is not None and not c.opted_out and c.opted_out_via is None



async def test_telegram_link_sets_the_chat_on_that_contact(sessions: Any, world: World, settings: Any) -> None:
    org, other = await world.org(), await world.org()
    contact = await _contact(sessions, org)
    key = settings.security.secret_key
    token = link_token(key, org.id, contact.id)
    assert len(token) <= 64 and token.replace("-", "").replace("_", "").isalnum()
    assert contact_of(key, other.id, token) is None
    async with sessions() as session:  # another organization's hook with this token does nothing
        assert await apply_link(session, other.id, key, token, "999") is None
    async with sessions() as session:
        assert await apply_link(session, org.id, key, token[:-2] + "AA", "999") is None
    async with sessions() as session:
        assert await apply_link(session, org.id, key, token, "777000") == contact.id
    async with sessions() as session:
        c = await session.get(Contact, contact.id)
        assert c is not None and c.telegram_chat_id == "777000"


async def test_concurrent_retries_of_one_inbound_store_it_once(sessions: Any, world: World) -> None:
    org = await world.org()
    await _contact(sessions, org)
    inbound = Inbound("+447911123456", "Hi", "SMrace")
    results = await asyncio.gather(*(_inbound(sessions, org, "twilio", "phone", inbound) for _ in range(4)))
    ids = {r.message_id for r in results}
    assert len(ids) == 1 and None not in ids
    assert sum(not r.duplicate for r in results) == 1
    async with sessions() as session:
        rows = list(await session.scalars(select(Message).where(Message.provider_message_id == "SMrace")))
    assert len(rows) == 1
