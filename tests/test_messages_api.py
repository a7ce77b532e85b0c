"""Messages and servicechains through the API without workers: validation, idempotency, credits,
templates, the state machine, tenancy. (Sending itself is in test_pipeline.py.)"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from saq import Queue
from sqlalchemy import func, select

from app.config import Settings
from app.messaging import state
from app.messaging.models import Message, MessageState
from app.queues import SEND_QUEUE, make_queue
from app.tenants.models import Organization, Plan, Role
from tests.conftest import World, bearer
from tests.pipeline import Tenant, fast_settings, new_contact, setup_chain, tenant


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


async def queued(settings: Settings) -> int:
    queue: Queue = make_queue(settings, SEND_QUEUE)
    await queue.connect()
    try:
        return int(await queue.count("queued"))
    finally:
        await queue.disconnect()


async def message_count(sessions: Any) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)) or 0)


async def post_message(client: AsyncTestClient[Any], t: Tenant, body: dict[str, Any], **headers: str) -> Any:
    return await client.post("/api/v1/messages", json=body, headers={**t.user, **headers})


async def test_accepted_message_is_queued_and_readable(
    client: AsyncTestClient[Any], world: World, settings: Settings
) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t, title="Dr")
    r = await post_message(
        client, t, {"contact_id": contact, "servicechain_id": chain, "content": "{{title}} {{surname}}"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["content"] == "Dr Jones" and body["direction"] == "outgoing" and body["state"] == "MSG_SENDING"
    assert body["attempts"][0]["service"] == "log" and body["attempts"][0]["outcome"] == "pending"
    assert await queued(settings) == 1
    listed = (await client.get("/api/v1/messages", params={"contact_id": contact}, headers=t.user)).json()
    assert listed["total"] == 1 and set(listed) == {"items", "total", "limit", "offset"}
    convo = (await client.get(f"/api/v1/contacts/{contact}/messages", headers=t.user)).json()
    assert [m["id"] for m in convo["items"]] == [body["id"]]
    by_state = (await client.get("/api/v1/messages", params={"state": "MSG_FAILED"}, headers=t.user)).json()
    assert by_state["total"] == 0


async def test_contact_default_chain_is_used(client: AsyncTestClient[Any], world: World) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t, servicechain_id=chain)
    r = await post_message(client, t, {"contact_id": contact, "content": "hi"})
    assert r.status_code == 201 and r.json()["servicechain_id"] == chain
    no_chain = await new_contact(client, t, email="other@example.com")
    r = await post_message(client, t, {"contact_id": no_chain, "content": "hi"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "content", ["Hi {{ nickname }}", "Hi {{ first_name", "{{ first_name.__class__.__mro__ }}", '{{ "x" * 99999999 }}']
)
async def test_template_errors_are_422_and_nothing_is_stored(
    client: AsyncTestClient[Any], world: World, sessions: Any, settings: Settings, content: str
) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t)
    r = await post_message(client, t, {"contact_id": contact, "servicechain_id": chain, "content": content})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert await message_count(sessions) == 0
    assert await queued(settings) == 0
    preview = await client.post(
        "/api/v1/messages/preview", json={"contact_id": contact, "content": content}, headers=t.user
    )
    assert preview.status_code == 422


async def test_idempotency_key(client: AsyncTestClient[Any], world: World, sessions: Any, settings: Settings) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t)
    body = {"contact_id": contact, "servicechain_id": chain, "content": "once"}
    first = await post_message(client, t, body, **{"Idempotency-Key": "order-42"})
    again = await post_message(client, t, body, **{"Idempotency-Key": "order-42"})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    other = await post_message(client, t, {**body, "content": "twice"}, **{"Idempotency-Key": "order-42"})
    assert other.status_code == 409
    assert await message_count(sessions) == 1
    assert await queued(settings) == 1
    # keys are per organization: another org may use the same key
    u = await tenant(world)
    chain_u = await setup_chain(client, u, ["log"])
    contact_u = await new_contact(client, u)
    r = await post_message(
        client,
        u,
        {"contact_id": contact_u, "servicechain_id": chain_u, "content": "once"},
        **{"Idempotency-Key": "order-42"},
    )
    assert r.status_code == 201 and r.json()["id"] != first.json()["id"]


async def test_pay_in_advance_without_credits_is_402_and_nothing_queued(
    client: AsyncTestClient[Any], world: World, sessions: Any, settings: Settings
) -> None:
    t = await tenant(world, plan=Plan.PAY_IN_ADVANCE, credits=1)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t)
    body = {"contact_id": contact, "servicechain_id": chain, "content": "hi"}
    assert (await post_message(client, t, body)).status_code == 201  # uses the one credit (reserved)
    r = await post_message(client, t, body)
    assert r.status_code == 402, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert await message_count(sessions) == 1
    assert await queued(settings) == 1
    async with sessions() as session:
        org = await session.get(Organization, uuid.UUID(t.org_id))
        assert (org.credits, org.credits_reserved) == (1, 1)


async def test_sysadmin_adds_credits(client: AsyncTestClient[Any], world: World) -> None:
    t = await tenant(world, plan=Plan.PAY_IN_ADVANCE, credits=0)
    root = bearer(await world.token(await world.user(None, Role.SYSADMIN)))
    r = await client.post(f"/api/v1/organizations/{t.org_id}/credits", json={"amount": 25}, headers=root)
    assert r.status_code == 200 and r.json()["credits"] == 25
    assert (
        await client.post(f"/api/v1/organizations/{t.org_id}/credits", json={"amount": 5}, headers=t.admin)
    ).status_code == 403
    assert (
        await client.post(f"/api/v1/organizations/{uuid.uuid4()}/credits", json={"amount": 5}, headers=root)
    ).status_code == 404
    assert (
        await client.post(f"/api/v1/organizations/{t.org_id}/credits", json={"amount": -5}, headers=root)
    ).status_code == 400


async def test_states_move_only_forward(client: AsyncTestClient[Any], world: World, sessions: Any) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t)
    message_id = uuid.UUID(
        (await post_message(client, t, {"contact_id": contact, "servicechain_id": chain, "content": "x"})).json()["id"]
    )
    S = MessageState
    steps = [
        (S.SENT, True),
        (S.SENDING, False),
        (S.PENDING, False),
        (S.FAILED, False),
        (S.DELIVERED_USER, True),
        (S.DELIVERED_SERVICE, False),
        (S.DELIVERED_USER, False),
        (S.READ, True),
        (S.REPLIED, True),
        (S.READ, False),
        (S.RECEIVED, False),
    ]
    for new, moves in steps:
        async with sessions() as session:
            assert await state.move(session, message_id, new) is moves, new
            await session.commit()
    async with sessions() as session:
        assert (await session.get(Message, message_id)).state == S.REPLIED
    assert state.can_move(S.PENDING, S.FAILED) and state.can_move(S.SENDING, S.FAILED)
    assert not any(state.can_move(s, S.FAILED) for s in state.FORWARD[2:])


async def test_servicechain_rules(client: AsyncTestClient[Any], world: World) -> None:
    t = await tenant(world)
    r = await client.post("/api/v1/servicechains", json={"name": "x", "services": ["carrier-pigeon"]}, headers=t.admin)
    assert r.status_code == 422 and "carrier-pigeon" in r.json()["detail"]
    r = await client.post("/api/v1/servicechains", json={"name": "x", "services": ["log", "log"]}, headers=t.admin)
    assert r.status_code == 422
    r = await client.post("/api/v1/servicechains", json={"name": "x", "services": []}, headers=t.admin)
    assert r.status_code == 400
    assert (
        await client.post("/api/v1/servicechains", json={"name": "u", "services": ["log"]}, headers=t.user)
    ).status_code == 403
    chain = await setup_chain(client, t, ["log", "smtp"], name="main")
    assert (
        await client.post("/api/v1/servicechains", json={"name": "main", "services": ["log"]}, headers=t.admin)
    ).status_code == 409
    r = await client.patch(f"/api/v1/servicechains/{chain}", json={"services": ["smtp", "log"]}, headers=t.admin)
    assert r.status_code == 200 and r.json()["services"] == ["smtp", "log"]
    assert (await client.get(f"/api/v1/servicechains/{chain}", headers=t.user)).status_code == 200
    contact = await new_contact(client, t, servicechain_id=chain)
    assert (await client.delete(f"/api/v1/servicechains/{chain}", headers=t.admin)).status_code == 409
    assert (
        await client.patch(f"/api/v1/contacts/{contact}", json={"servicechain_id": None}, headers=t.user)
    ).status_code == 200
    assert (await client.delete(f"/api/v1/servicechains/{chain}", headers=t.admin)).status_code == 204


async def test_cross_tenant_ids_answer_404_and_lists_do_not_leak(client: AsyncTestClient[Any], world: World) -> None:
    a = await tenant(world)
    b = await tenant(world)
    chain_a = await setup_chain(client, a, ["log"])
    contact_a = await new_contact(client, a)
    msg_a = (
        await post_message(client, a, {"contact_id": contact_a, "servicechain_id": chain_a, "content": "a"})
    ).json()
    chain_b = await setup_chain(client, b, ["log"])
    contact_b = await new_contact(client, b)
    for path in (
        f"/api/v1/messages/{msg_a['id']}",
        f"/api/v1/servicechains/{chain_a}",
        f"/api/v1/contacts/{contact_a}/messages",
    ):
        assert (await client.get(path, headers=b.user)).status_code == 404, path
        assert (
            await client.get(path.replace(path.split("/")[4], str(uuid.uuid4())), headers=b.user)
        ).status_code == 404
    assert (
        await client.patch(f"/api/v1/servicechains/{chain_a}", json={"name": "mine"}, headers=b.admin)
    ).status_code == 404
    assert (await client.delete(f"/api/v1/servicechains/{chain_a}", headers=b.admin)).status_code == 404
    # another org's contact, chain or reply_to in a body: 404 as if they did not exist, nothing stored
    for body in (
        {"contact_id": contact_a, "servicechain_id": chain_b, "content": "x"},
        {"contact_id": contact_b, "servicechain_id": chain_a, "content": "x"},
        {"contact_id": contact_b, "servicechain_id": chain_b, "content": "x", "reply_to": msg_a["id"]},
    ):
        assert (await post_message(client, b, body)).status_code == 404, body
    for path in ("/api/v1/messages", "/api/v1/servicechains"):
        items = (await client.get(path, headers=b.user)).json()["items"]
        assert all(i["organization_id"] == b.org_id for i in items), path


async def test_scopes_and_authentication(client: AsyncTestClient[Any], world: World) -> None:
    t = await tenant(world)
    org = await world.org()
    client_id, secret = await world.api_client(org, ["messages:read"])
    token = (
        await client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    ).json()
    reader = bearer(token["access_token"])
    assert (await client.get("/api/v1/messages", headers=reader)).status_code == 200
    assert (await client.post("/api/v1/messages", json={}, headers=reader)).status_code == 403
    assert (await client.get("/api/v1/servicechains", headers=reader)).status_code == 403
    assert (await client.get("/api/v1/messages")).status_code == 401
    assert (await client.get("/api/v1/messages", headers=bearer("vol_at_nope"))).status_code == 401
    assert (await client.get("/api/v1/servicechains", headers=t.user)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"contact_id": "not-a-uuid", "content": "x"},
        {"contact_id": str(uuid.uuid4()), "content": ""},
        {"contact_id": str(uuid.uuid4()), "content": "x" * 10_001},
        {"contact_id": str(uuid.uuid4()), "content": "x", "send_at": "tomorrow"},
        {"contact_id": str(uuid.uuid4()), "content": "x", "priority": "high"},
        {"contact_id": str(uuid.uuid4()), "content": 42},
        [],
    ],
)
async def test_hostile_message_bodies_are_4xx(client: AsyncTestClient[Any], world: World, body: Any) -> None:
    t = await tenant(world)
    r = await client.post("/api/v1/messages", json=body, headers=t.user)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    for path in (
        "/api/v1/messages/xyz",
        "/api/v1/servicechains/1",
        "/api/v1/messages?state=NOPE",
        "/api/v1/messages?since=x",
    ):
        r = await client.get(path, headers=t.user)
        assert 400 <= r.status_code < 500, (path, r.status_code)


async def test_scheduled_message_waits_until_due(
    client: AsyncTestClient[Any], world: World, settings: Settings
) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t)
    r = await post_message(
        client,
        t,
        {"contact_id": contact, "servicechain_id": chain, "content": "later", "send_at": "2999-01-01T00:00:00Z"},
    )
    assert r.status_code == 201 and r.json()["state"] == "MSG_PENDING" and r.json()["attempts"] == []
    assert await queued(settings) == 0
