"""Outbound status webhooks with real parts: the app, SAQ workers, Redis, the database and a local HTTP
receiver that checks the Standard Webhooks signature with the ``standardwebhooks`` verifier.

The retry schedule and the 3-day disabling are driven by calling the delivery functions at chosen times
(``now``), never by sleeping."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from litestar.testing import AsyncTestClient
from saq import Queue
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from app.clock import utcnow
from app.config import Settings
from app.contacts.services import ContactService
from app.messaging import state
from app.messaging.models import Message, MessageState
from app.tenants.deps import scoped
from app.webhooks import delivery, jobs
from app.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEvent
from tests.conftest import World
from tests.helpers import free_port, start_worker, stop_process
from tests.pipeline import fast_settings, new_contact, send, setup_chain, tenant, wait_final
from tests.webhooks_receiver import (
    Receiver,
    attempt_at,
    create_webhook,
    fan_out_at,
    opt_out,
    the_delivery,
    wait_for,
    wait_for_status,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


# ------------------------------------------------------------------ end to end, with workers


async def test_a_sent_message_reaches_the_endpoint_signed(
    client: AsyncTestClient[Any], world: World, settings: Settings, receiver: Receiver
) -> None:
    t = await tenant(world)
    hook = await create_webhook(client, t, receiver.url, event_types=["message.state_changed"])
    secret = hook["secret"]
    assert secret.startswith("whsec_")
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t)
    proc = start_worker(settings)
    try:
        sent = await send(client, t, contact, chain, "Hi there")
        final = await wait_final(client, t, sent["id"])
        assert final["state"] == "MSG_SENT"
        await wait_for(lambda: any(e["data"]["state"] == "MSG_SENT" for e in receiver.events()))
    finally:
        stop_process(proc)
    verifier = Webhook(secret)
    for headers, body in receiver.requests:
        assert verifier.verify(body, headers)["type"] == "message.state_changed"
    events = sorted(receiver.events(), key=lambda e: e["data"]["updated_at"])  # deliveries run in parallel
    assert [e["data"]["state"] for e in events] == ["MSG_SENDING", "MSG_SENT"]
    assert {e["data"]["id"] for e in events} == {sent["id"]}
    last = events[-1]["data"]
    for field in ("organization_id", "contact_id", "servicechain_id", "content", "service", "sent_at"):
        assert last[field] == final[field], field
    assert len({h["webhook-id"] for h, _ in receiver.requests}) == 2
    r = await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=t.admin)
    assert r.status_code == 200
    log = r.json()["items"]
    assert [d["status"] for d in log] == ["delivered", "delivered"]
    assert all(d["attempts"][0]["status_code"] == 200 for d in log)
    assert log[0]["created_at"] >= log[1]["created_at"]  # newest first


async def test_events_written_while_redis_is_down_are_delivered_once_it_is_back(
    client: AsyncTestClient[Any],
    world: World,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
) -> None:
    t = await tenant(world)
    hook = await create_webhook(client, t, receiver.url)
    contact = await new_contact(client, t)
    await opt_out(client, t, contact)  # the change commits whatever Redis does
    dead = Queue.from_url(f"redis://127.0.0.1:{free_port()}", name="dead-webhooks")
    with pytest.raises(Exception, match=r"(?i)connect|refused"):
        await jobs.dispatch(sessions, dead)
    with contextlib.suppress(Exception):
        await dead.disconnect()
    assert receiver.requests == []
    assert (await the_delivery(sessions, hook["id"])).status == DeliveryStatus.PENDING
    proc = start_worker(settings)
    try:
        await wait_for(lambda: len(receiver.requests) == 1)
        await wait_for_status(sessions, hook["id"], DeliveryStatus.DELIVERED)
    finally:
        stop_process(proc)
    (event,) = receiver.events()
    assert event["type"] == "contact.opted_out" and event["data"]["id"] == contact
    assert event["data"]["opted_out"] is True
    Webhook(hook["secret"]).verify(receiver.requests[0][1], receiver.requests[0][0])


async def test_replay_and_ping_through_the_workers(
    client: AsyncTestClient[Any], world: World, settings: Settings, receiver: Receiver
) -> None:
    t = await tenant(world)
    hook = await create_webhook(client, t, receiver.url)
    contact = await new_contact(client, t)
    await opt_out(client, t, contact, out=True)
    proc = start_worker(settings)
    try:
        await wait_for(lambda: len(receiver.requests) == 1)
        deliveries = (await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=t.admin)).json()["items"]
        r = await client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{deliveries[0]['id']}/retry", headers=t.admin)
        assert r.status_code == 202, r.text
        await wait_for(lambda: len(receiver.requests) == 2)
        r = await client.post(f"/api/v1/webhooks/{hook['id']}/test", headers=t.admin)
        assert r.status_code == 202, r.text
        await wait_for(lambda: len(receiver.requests) == 3)
    finally:
        stop_process(proc)
    first, replay, ping = receiver.requests
    assert first[0]["webhook-id"] == replay[0]["webhook-id"]  # the same event, replayed
    assert json.loads(ping[1])["type"] == "ping"
    for headers, body in receiver.requests:
        Webhook(hook["secret"]).verify(body, headers)


# ------------------------------------------------------------------ retries, rotation, disabling (time injected)


async def test_a_receiver_failing_twice_gets_the_event_three_times(
    client: AsyncTestClient[Any],
    world: World,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
) -> None:
    t = await tenant(world)
    hook = await create_webhook(client, t, receiver.url)
    contact = await new_contact(client, t)
    await opt_out(client, t, contact)
    receiver.answers = [500, 500, 200]
    t0 = utcnow()
    assert await fan_out_at(sessions, t0) == 1
    d = await the_delivery(sessions, hook["id"])
    assert await attempt_at(sessions, settings, d.id, t0) == DeliveryStatus.FAILED
    assert (await the_delivery(sessions, hook["id"])).next_attempt_at == t0 + timedelta(seconds=5)
    assert await attempt_at(sessions, settings, d.id, t0 + timedelta(seconds=4)) is None  # not due yet
    assert await attempt_at(sessions, settings, d.id, t0 + timedelta(seconds=5)) == DeliveryStatus.FAILED
    assert (await the_delivery(sessions, hook["id"])).next_attempt_at == t0 + timedelta(seconds=5 + 300)
    assert await attempt_at(sessions, settings, d.id, t0 + timedelta(seconds=305)) == DeliveryStatus.DELIVERED
    assert len(receiver.requests) == 3
    assert len({h["webhook-id"] for h, _ in receiver.requests}) == 1  # the same id on every retry
    Webhook(hook["secret"]).verify(receiver.requests[0][1], receiver.requests[0][0])

    r = await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=t.admin)
    (logged,) = r.json()["items"]
    assert logged["status"] == "delivered" and logged["attempt_count"] == 3
    assert [a["status_code"] for a in logged["attempts"]] == [500, 500, 200]
    assert all(len(a["response_body"].encode()) <= 1024 for a in logged["attempts"])
    assert logged["attempts"][0]["response_body"].startswith("answer 500")
    assert all(a["latency_ms"] >= 0 and a["error"] is None for a in logged["attempts"])
    r = await client.get(f"/api/v1/webhooks/{hook['id']}", headers=t.admin)
    assert r.json()["last_success_at"] is not None and r.json()["failing_since"] is None
    for query, count in (("status=delivered", 1), ("status=failed", 0), ("event_type=contact.opted_in", 0)):
        r = await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries?{query}", headers=t.admin)
        assert r.status_code == 200 and r.json()["total"] == count, (query, r.text)
    r = await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries?status=bogus", headers=t.admin)
    assert r.status_code == 400


async def test_after_a_rotation_both_secrets_sign_for_24_hours(
    client: AsyncTestClient[Any],
    world: World,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
) -> None:
    t = await tenant(world)
    hook = await create_webhook(client, t, receiver.url, event_types=["contact.opted_out", "contact.opted_in"])
    old = hook["secret"]
    r = await client.post(f"/api/v1/webhooks/{hook['id']}/rotate-secret", headers=t.admin)
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new != old and new.startswith("whsec_")
    assert "secret" not in (await client.get(f"/api/v1/webhooks/{hook['id']}", headers=t.admin)).json()
    contact = await new_contact(client, t)
    await opt_out(client, t, contact)
    now = utcnow()
    await fan_out_at(sessions, now)
    assert await attempt_at(sessions, settings, (await the_delivery(sessions, hook["id"])).id, now) == "delivered"
    headers, body = receiver.requests[0]
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(body, headers)
    Webhook(new).verify(body, headers)

    await opt_out(client, t, contact, out=False)
    later = now + timedelta(hours=24, seconds=1)
    await fan_out_at(sessions, later)
    async with sessions() as session:
        second = await session.scalar(
            select(WebhookDelivery.id).where(
                WebhookDelivery.endpoint_id == UUID(hook["id"]), WebhookDelivery.event_type == "contact.opted_in"
            )
        )
    assert second is not None
    assert await attempt_at(sessions, settings, second, later) == "delivered"
    headers, body = receiver.requests[1]
    (only,) = headers["webhook-signature"].split(" ")
    assert only == Webhook(new).sign(headers["webhook-id"], later, body.decode())
    assert only != Webhook(old).sign(headers["webhook-id"], later, body.decode())  # the old one no longer signs


async def test_a_receiver_that_never_succeeds_is_retried_on_the_schedule_then_disabled(
    client: AsyncTestClient[Any],
    world: World,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
) -> None:
    t = await tenant(world)
    hook = await create_webhook(client, t, receiver.url)
    contact = await new_contact(client, t)
    await opt_out(client, t, contact)
    receiver.answers = [503] * 100
    t0 = utcnow()
    await fan_out_at(sessions, t0)
    d = await the_delivery(sessions, hook["id"])
    at = t0
    for n, delay in enumerate(delivery.SCHEDULE):
        at = at + timedelta(seconds=delay)
        status = await attempt_at(sessions, settings, d.id, at)
        row = await the_delivery(sessions, hook["id"])
        assert row.attempts == n + 1
        if n + 1 < len(delivery.SCHEDULE):
            assert status == DeliveryStatus.FAILED
            assert row.next_attempt_at == at + timedelta(seconds=delivery.SCHEDULE[n + 1])
        else:
            assert status == DeliveryStatus.GIVEN_UP and row.next_attempt_at is None
    assert len(receiver.requests) == len(delivery.SCHEDULE) == 8
    r = await client.get(f"/api/v1/webhooks/{hook['id']}", headers=t.admin)
    assert r.json()["enabled"] is True and r.json()["failing_since"] is not None  # 27.6 h: not 3 days yet

    # another event, three days after the first failure: its failure disables the endpoint
    await opt_out(client, t, contact, out=False)
    t3 = t0 + timedelta(days=3)
    await fan_out_at(sessions, t3)
    async with sessions() as session:
        second = await session.scalar(
            select(WebhookDelivery.id).where(
                WebhookDelivery.event_type == "contact.opted_in", WebhookDelivery.endpoint_id == UUID(hook["id"])
            )
        )
    assert second is not None
    assert await attempt_at(sessions, settings, second, t3) == DeliveryStatus.GIVEN_UP
    r = await client.get(f"/api/v1/webhooks/{hook['id']}", headers=t.admin)
    body = r.json()
    assert body["enabled"] is False and "3 days" in body["disabled_reason"]

    # a disabled endpoint gets nothing more; enabling it again clears the reason
    await opt_out(client, t, contact, out=True)
    await fan_out_at(sessions, t3)
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.endpoint_id == UUID(hook["id"]))
        )
    assert count == 2
    r = await client.patch(f"/api/v1/webhooks/{hook['id']}", json={"enabled": True}, headers=t.admin)
    assert r.status_code == 200 and r.json()["disabled_reason"] is None and r.json()["failing_since"] is None


# ------------------------------------------------------------------ the outbox


async def test_a_rolled_back_change_emits_nothing_and_a_committed_one_emits_once(
    world: World, sessions: async_sessionmaker[AsyncSession], client: AsyncTestClient[Any]
) -> None:
    t = await tenant(world)
    org = UUID(t.org_id)
    contact_id = UUID(await new_contact(client, t))
    chain = await setup_chain(client, t, ["log"])
    async with sessions() as session:
        message = Message(organization_id=org, contact_id=contact_id, servicechain_id=UUID(chain), content="x")
        session.add(message)
        await session.commit()

    async def events() -> list[WebhookEvent]:
        async with sessions() as session:
            return list(await session.scalars(select(WebhookEvent).where(WebhookEvent.organization_id == org)))

    before = len(await events())
    async with sessions() as session:
        assert await state.move(session, message.id, MessageState.SENDING)
        await scoped(ContactService, session, org).set_opt_out(contact_id, True)
        await session.rollback()
    assert len(await events()) == before
    async with sessions() as session:
        assert await state.move(session, message.id, MessageState.SENDING)
        assert not await state.move(session, message.id, MessageState.PENDING)  # no move, no event
        await session.commit()
    new = (await events())[before:]
    assert [e.type for e in new] == ["message.state_changed"]
    assert new[0].payload["state"] == "MSG_SENDING" and new[0].payload["id"] == str(message.id)


async def test_an_event_nobody_subscribed_to_is_dropped_by_the_dispatcher(
    client: AsyncTestClient[Any], world: World, sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    t = await tenant(world)
    hook = await create_webhook(client, t, receiver.url, event_types=["message.received"])
    contact = await new_contact(client, t)
    await opt_out(client, t, contact)
    await fan_out_at(sessions, utcnow())
    async with sessions() as session:
        left = await session.scalar(
            select(func.count()).select_from(WebhookEvent).where(WebhookEvent.organization_id == UUID(t.org_id))
        )
        deliveries = await session.scalar(
            select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.endpoint_id == UUID(hook["id"]))
        )
    assert left == 0 and deliveries == 0


async def test_an_inbound_message_emits_message_received(
    world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    from app.messaging.inbound import apply_inbound
    from app.plugins.base import Inbound

    org = await world.org()
    async with sessions() as session:
        received = await apply_inbound(session, org.id, "log", "email", Inbound("ann@example.com", "Hello", "in-1"))
    async with sessions() as session:
        events = list(await session.scalars(select(WebhookEvent).where(WebhookEvent.organization_id == org.id)))
    (event,) = events
    assert event.type == "message.received"
    assert event.payload["id"] == str(received.message_id) and event.payload["state"] == "MSG_RECEIVED"
    assert event.payload["direction"] == "incoming" and event.payload["content"] == "Hello"
