"""A message's detail page follows it without a reload (issue 11 item 5): its status block asks for itself
every second while the message is in flight, every few seconds while a service that gives receipts may
still report (Twilio), and stops once nothing more is expected — a final state, a service without
receipts, or an hour without a change. Each answer shows the state it was rendered for."""

from __future__ import annotations

import uuid
from datetime import timedelta

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import utcnow
from app.messaging.models import Message, MessageState
from app.plugins import twilio
from tests.conftest import World
from tests.test_live_pages import HX, add_message, move, poll
from tests.test_web_pages import login

Client = AsyncTestClient[Litestar]
S = MessageState
STATUS = {**HX, "HX-Target": "message-status"}


async def status(client: Client, message_id: uuid.UUID) -> str:
    answer = await client.get(f"/messages/{message_id}", headers=STATUS)
    assert answer.status_code == 200, answer.text
    assert answer.text.lstrip().startswith('<section id="message-status"')
    return answer.text


async def sent_by(sessions: async_sessionmaker[AsyncSession], message_id: uuid.UUID, service: str) -> None:
    """What the coordinator does when a service accepted the message (its state through app.messaging.state)."""
    await move(sessions, message_id, S.SENT)
    async with sessions() as session:
        await session.execute(update(Message).where(Message.id == message_id).values(service=service))
        await session.commit()


async def test_the_detail_follows_receipts_then_stops(
    client: Client, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    org = await world.org()
    assert (await login(client, (await world.user(org)).email)).status_code == 303
    message_id = await add_message(sessions, org)  # MSG_SENDING
    assert 'hx-trigger="every 1s"' in await status(client, message_id)

    # sent by a service that gives receipts: still watched, more slowly, and each receipt shows
    await sent_by(sessions, message_id, twilio.NAME)
    text = await status(client, message_id)
    assert 'data-state="MSG_SENT"' in text and 'hx-trigger="every 5s"' in text and "watching for a receipt" in text
    _, etag = await poll(client, f"/messages/{message_id}", "message-status", None)
    assert await poll(client, f"/messages/{message_id}", "message-status", etag) == (304, etag)
    await move(sessions, message_id, S.DELIVERED_USER)  # the delivery receipt
    code, new = await poll(client, f"/messages/{message_id}", "message-status", etag)
    assert code == 200 and new != etag
    text = await status(client, message_id)
    assert 'data-state="MSG_DELIVERED_USER"' in text and 'hx-trigger="every 5s"' in text
    # an hour without news: the block stops asking (and its version says so, so a poll is not a 304)
    async with sessions() as session:
        await session.execute(
            update(Message).where(Message.id == message_id).values(updated_at=utcnow() - timedelta(hours=2))
        )
        await session.commit()
    assert "hx-trigger" not in await status(client, message_id)

    # a final state: no trigger
    failed = await add_message(sessions, org)
    await move(sessions, failed, S.FAILED)
    text = await status(client, failed)
    assert 'data-state="MSG_FAILED"' in text and "hx-trigger" not in text
    read = await add_message(sessions, org)
    await sent_by(sessions, read, twilio.NAME)
    await move(sessions, read, S.READ)
    assert "hx-trigger" not in await status(client, read)


async def test_a_service_without_receipts_stops_at_sent(
    client: Client, sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    org = await world.org()
    assert (await login(client, (await world.user(org)).email)).status_code == 303
    message_id = await add_message(sessions, org)
    await sent_by(sessions, message_id, "log")
    text = await status(client, message_id)
    assert 'data-state="MSG_SENT"' in text and "hx-trigger" not in text
    # another organization's message: 404, never its status
    theirs = await add_message(sessions, await world.org())
    assert (await client.get(f"/messages/{theirs}", headers=STATUS)).status_code == 404
