"""Blasts: the POST's rules, the fan-out in real SAQ workers (separate processes), cancel, recovery."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, insert, select

from app.audit.models import AuditEntry
from app.blasts.fanout import BATCH, WINDOW
from app.blasts.models import Blast, BlastState
from app.config import Settings
from app.contacts.models import Category, Contact, contact_category
from app.messaging.models import Message
from app.queues import SEND_BATCH
from app.tenants.models import Organization, Plan, Role
from app.webhooks.models import WebhookEvent
from tests.conftest import World
from tests.helpers import start_worker, stop_process
from tests.pipeline import Tenant, fast_settings, setup_chain, tenant

FINAL_BLAST = {"completed", "cancelled"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


async def contacts(
    sessions: Any, t: Tenant, n: int, category: uuid.UUID | None = None, **fields: Any
) -> list[uuid.UUID]:
    """``n`` contacts of ``t`` (in ``category``), written in bulk: the tests are about blasts."""
    ids = [uuid.uuid4() for _ in range(n)]
    now = datetime.now(UTC)
    rows = [
        {
            "id": i,
            "organization_id": uuid.UUID(t.org_id),
            "first_name": f"F{k}",
            "surname": "Smith",
            "email": f"c{k}-{i.hex[:6]}@example.com",
            "created_at": now,
            "updated_at": now,
            **fields,
        }
        for k, i in enumerate(ids)
    ]
    async with sessions() as session:
        await session.execute(insert(Contact), rows)
        if category is not None:
            await session.execute(insert(contact_category), [{"contact_id": i, "category_id": category} for i in ids])
        await session.commit()
    return ids


async def category(sessions: Any, t: Tenant, name: str = "members") -> uuid.UUID:
    async with sessions() as session:
        c = Category(organization_id=uuid.UUID(t.org_id), name=name)
        session.add(c)
        await session.commit()
        return c.id


async def post_blast(
    client: AsyncTestClient[Any], t: Tenant, headers: dict[str, str] | None = None, **body: Any
) -> Any:
    return await client.post("/api/v1/blasts", json=body, headers={**t.user, **(headers or {})})


def ids(values: list[uuid.UUID]) -> list[str]:
    return [str(v) for v in values]


async def wait_blast(
    client: AsyncTestClient[Any], t: Tenant, blast_id: str, states: set[str] = FINAL_BLAST, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = (await client.get(f"/api/v1/blasts/{blast_id}", headers=t.user)).json()
        if body["state"] in states:
            return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"blast not {states} after {timeout}s: {body}")


async def messages_of(sessions: Any, blast_id: str) -> list[Message]:
    async with sessions() as session:
        return list(await session.scalars(select(Message).where(Message.blast_id == uuid.UUID(blast_id))))


async def org_credits(sessions: Any, t: Tenant) -> tuple[int, int]:
    async with sessions() as session:
        org = await session.get(Organization, uuid.UUID(t.org_id), populate_existing=True)
        assert org is not None
        return org.credits, org.credits_reserved


# ---------------------------------------------------------------------------- the POST's rules


async def test_refusals_store_nothing(client: AsyncTestClient[Any], world: World, sessions: Any) -> None:
    t = await tenant(world)
    other = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    other_chain = await setup_chain(client, other, ["log"])
    mine = await contacts(sessions, t, 2)
    theirs = await contacts(sessions, other, 1)
    their_category = await category(sessions, other)
    base = {"name": "b", "content": "Hi {{ first_name }}", "servicechain_id": chain, "contact_ids": ids(mine)}

    r = await post_blast(client, t, **{**base, "content": "Hi {{ nickname }}"})
    assert r.status_code == 422 and "nickname" in r.text, r.text
    r = await post_blast(client, t, **{**base, "content": "Hi {{ first_name"})
    assert r.status_code == 422, r.text
    r = await post_blast(client, t, **{**base, "servicechain_id": other_chain})
    assert r.status_code == 404, r.text
    r = await post_blast(client, t, **{**base, "contact_ids": ids(mine + theirs)})
    assert r.status_code == 422 and str(theirs[0]) in r.text, r.text
    r = await post_blast(client, t, **{**base, "category_ids": [str(their_category)]})
    assert r.status_code == 422 and "category_ids" in r.text, r.text
    r = await post_blast(client, t, **{**base, "contact_ids": []})
    assert r.status_code == 422, r.text
    r = await post_blast(client, t, **{**base, "contact_ids": [str(uuid.uuid4())]})
    assert r.status_code == 422, r.text
    r = await post_blast(client, t, **{**base, "contact_ids": "nope"})
    assert r.status_code == 400, r.text
    opted = await contacts(sessions, t, 2, opted_out=True)
    r = await post_blast(client, t, **{**base, "contact_ids": ids(opted)})
    assert r.status_code == 422 and "empty" in r.text, r.text
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Blast)) == 0
    assert await org_credits(sessions, t) == (0, 0)


async def test_pay_in_advance_needs_credits_for_the_whole_audience(
    client: AsyncTestClient[Any], world: World, sessions: Any
) -> None:
    t = await tenant(world, plan=Plan.PAY_IN_ADVANCE, credits=4)
    chain = await setup_chain(client, t, ["log"])
    people = await contacts(sessions, t, 5)
    r = await post_blast(client, t, name="b", content="Hi", servicechain_id=chain, contact_ids=ids(people))
    assert r.status_code == 402, r.text
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Blast)) == 0
    assert await org_credits(sessions, t) == (4, 0)
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await post_blast(
        client, t, name="b", content="Hi", servicechain_id=chain, contact_ids=ids(people[:4]), send_at=at
    )
    assert r.status_code == 201, r.text
    assert await org_credits(sessions, t) == (4, 4)  # held for the whole audience


async def test_idempotency_key_gives_the_same_blast(client: AsyncTestClient[Any], world: World, sessions: Any) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    people = await contacts(sessions, t, 3)
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {"name": "b", "content": "Hi", "servicechain_id": chain, "contact_ids": ids(people), "send_at": at}
    key = {"Idempotency-Key": "blast-1"}
    first = await post_blast(client, t, key, **body)
    again = await post_blast(client, t, key, **body)
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert first.json()["id"] == again.json()["id"]
    clash = await post_blast(client, t, key, **{**body, "name": "other"})
    assert clash.status_code == 409, clash.text
    other = await tenant(world)  # the same key in another organization is another blast
    other_chain = await setup_chain(client, other, ["log"])
    theirs = await contacts(sessions, other, 1)
    r = await post_blast(client, other, key, **{**body, "servicechain_id": other_chain, "contact_ids": ids(theirs)})
    assert r.status_code == 201 and r.json()["id"] != first.json()["id"]
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Blast)) == 2
    assert await org_credits(sessions, t) == (0, 3)


async def test_cross_tenant_on_every_endpoint(client: AsyncTestClient[Any], world: World, sessions: Any) -> None:
    t = await tenant(world)
    other = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    people = await contacts(sessions, t, 2)
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await post_blast(client, t, name="b", content="Hi", servicechain_id=chain, contact_ids=ids(people), send_at=at)
    blast_id = r.json()["id"]
    assert (await client.get(f"/api/v1/blasts/{blast_id}", headers=other.user)).status_code == 404
    assert (await client.post(f"/api/v1/blasts/{blast_id}/cancel", headers=other.user)).status_code == 404
    assert (await client.get("/api/v1/blasts", headers=other.user)).json()["items"] == []
    assert [b["id"] for b in (await client.get("/api/v1/blasts", headers=t.user)).json()["items"]] == [blast_id]
    assert (await client.get(f"/api/v1/blasts/{blast_id}", headers=t.user)).json()["state"] == "scheduled"
    sysadmin = await world.user(None, __import__("app.tenants.models", fromlist=["Role"]).Role.SYSADMIN)
    from tests.conftest import bearer

    admin = bearer(await world.token(sysadmin))
    assert (await client.get("/api/v1/blasts", headers=admin)).status_code == 403
    reader = await world.token(await world.user(await _org(sessions, t)), scopes=["blasts:read"])
    r = await client.post(
        "/api/v1/blasts",
        json={"name": "b", "content": "Hi", "servicechain_id": chain, "contact_ids": ids(people)},
        headers=bearer(reader),
    )
    assert r.status_code == 403, r.text
    assert (await client.get(f"/api/v1/blasts/{blast_id}", headers=bearer(reader))).status_code == 200


async def _org(sessions: Any, t: Tenant) -> Organization:
    async with sessions() as session:
        org = await session.get(Organization, uuid.UUID(t.org_id))
        assert org is not None
        return org


async def test_cancel_of_a_scheduled_blast(client: AsyncTestClient[Any], world: World, sessions: Any) -> None:
    t = await tenant(world, plan=Plan.PAY_IN_ADVANCE, credits=10)
    chain = await setup_chain(client, t, ["log"])
    people = await contacts(sessions, t, 3)
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = await post_blast(client, t, name="b", content="Hi", servicechain_id=chain, contact_ids=ids(people), send_at=at)
    blast_id = r.json()["id"]
    assert await org_credits(sessions, t) == (10, 3)
    r = await client.post(f"/api/v1/blasts/{blast_id}/cancel", headers=t.user)
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    assert r.json()["stats"]["not_created"] == 3 and r.json()["completed_at"]
    assert await org_credits(sessions, t) == (10, 0)
    assert await messages_of(sessions, blast_id) == []
    r = await client.post(f"/api/v1/blasts/{blast_id}/cancel", headers=t.user)
    assert r.status_code == 409, r.text
    listed = (await client.get("/api/v1/blasts?state=cancelled", headers=t.user)).json()["items"]
    assert [b["id"] for b in listed] == [blast_id]
    assert (await client.get("/api/v1/blasts?state=sending", headers=t.user)).json()["items"] == []
    assert (await client.get("/api/v1/blasts?state=bogus", headers=t.user)).status_code == 400
    async with sessions() as session:  # the cancel is in the audit log, by the user who asked
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "blast.cancelled"))
        assert entry is not None and str(entry.target_id) == blast_id and entry.actor_kind == "user"


# ---------------------------------------------------------------------------- fan-out in the workers


@pytest.mark.usefixtures("worker")
async def test_audience_union_dedupe_opt_out_and_templating(
    client: AsyncTestClient[Any], world: World, sessions: Any
) -> None:
    t = await tenant(world, plan=Plan.PAY_IN_ADVANCE, credits=100)
    chain = await setup_chain(client, t, ["log"])
    a, b = await category(sessions, t, "a"), await category(sessions, t, "b")
    in_a = await contacts(sessions, t, 3, a)
    in_b = await contacts(sessions, t, 2, b)
    async with sessions() as session:  # one contact in both categories, and named directly too
        await session.execute(insert(contact_category).values(contact_id=in_a[0], category_id=b))
        await session.commit()
    loose = await contacts(sessions, t, 2)
    opted = await contacts(sessions, t, 2, a, opted_out=True)
    # an endpoint that wants blast.completed (events nobody subscribed to are not kept)
    hook = {"url": "http://127.0.0.1:9/hook", "event_types": ["blast.completed"]}
    assert (await client.post("/api/v1/webhooks", json=hook, headers=t.admin)).status_code == 201
    r = await post_blast(
        client,
        t,
        name="News",
        content="Hi {{ first_name }} {{ surname }}",
        servicechain_id=chain,
        category_ids=[str(a), str(b)],
        contact_ids=ids([in_a[0], *loose, opted[0]]),
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["audience"] == 7 and created["skipped_opted_out"] == 2
    done = await wait_blast(client, t, created["id"])
    assert done["state"] == "completed" and done["progress"] == 1.0 and done["completed_at"], done
    assert done["stats"]["MSG_SENT"] == 7 and done["stats"]["skipped_opted_out"] == 2
    messages = await messages_of(sessions, created["id"])
    assert sorted(m.contact_id for m in messages) == sorted({*in_a, *in_b, *loose})
    async with sessions() as session:
        names = {c.id: c.first_name for c in await session.scalars(select(Contact))}
    assert all(m.content == f"Hi {names[m.contact_id]} Smith" for m in messages)
    assert await org_credits(sessions, t) == (93, 0)
    listed = (await client.get(f"/api/v1/messages?blast_id={created['id']}", headers=t.user)).json()
    assert listed["total"] == 7
    async with sessions() as session:  # blast.completed is in the webhooks outbox, with the final stats
        events = list(await session.scalars(select(WebhookEvent).where(WebhookEvent.type == "blast.completed")))
    assert [e.payload["id"] for e in events] == [created["id"]]
    assert events[0].payload["state"] == "completed" and events[0].payload["stats"]["MSG_SENT"] == 7


@pytest.mark.usefixtures("worker")
async def test_scheduled_blast_starts_when_due(client: AsyncTestClient[Any], world: World, sessions: Any) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    people = await contacts(sessions, t, 3)
    at = datetime.now(UTC) + timedelta(seconds=2)
    r = await post_blast(
        client, t, name="b", content="Hi", servicechain_id=chain, contact_ids=ids(people), send_at=at.isoformat()
    )
    assert r.json()["state"] == "scheduled" and r.json()["started_at"] is None
    done = await wait_blast(client, t, r.json()["id"])
    assert done["stats"]["MSG_SENT"] == 3
    assert datetime.fromisoformat(done["started_at"]) >= at
    assert all(m.sent_at is not None and m.sent_at >= at for m in await messages_of(sessions, r.json()["id"]))


@pytest.mark.usefixtures("worker")
async def test_cancel_of_a_running_blast(client: AsyncTestClient[Any], world: World, sessions: Any) -> None:
    audience = 4 * WINDOW  # well beyond the fan-out's window: most of it is not created when the cancel comes
    t = await tenant(world, plan=Plan.PAY_IN_ADVANCE, credits=audience + 500)
    chain = await setup_chain(client, t, ["log"])
    members = await category(sessions, t)
    await contacts(sessions, t, audience, members)
    r = await post_blast(
        client, t, name="big", content="Hi {{ first_name }}", servicechain_id=chain, category_ids=[str(members)]
    )
    blast_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while not any(m.state == "MSG_SENT" for m in await messages_of(sessions, blast_id)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    r = await client.post(f"/api/v1/blasts/{blast_id}/cancel", headers=t.user)
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    at_cancel = await messages_of(sessions, blast_id)
    with_worker = {m.id for m in at_cancel if m.state in ("MSG_SENDING", "MSG_SENT")}
    assert not any(m.state == "MSG_PENDING" for m in at_cancel)
    # let what was with a worker finish; the queued send jobs of the blast fail their messages "cancelled"
    deadline = time.monotonic() + 60
    while any(m.state == "MSG_SENDING" for m in await messages_of(sessions, blast_id)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.25)
    await asyncio.sleep(1)  # nothing else may move
    after = await messages_of(sessions, blast_id)
    assert {m.id for m in after} == {m.id for m in at_cancel}  # nothing created after the cancel
    assert {m.id for m in after if m.state == "MSG_SENT"} <= with_worker
    assert all(m.failure_reason == "cancelled" for m in after if m.state == "MSG_FAILED")
    body = (await client.get(f"/api/v1/blasts/{blast_id}", headers=t.user)).json()
    assert body["stats"]["not_created"] > 0
    states = sum(v for k, v in body["stats"].items() if k.startswith("MSG_"))
    assert states + body["stats"]["not_created"] == body["audience"] == audience
    sent = sum(1 for m in after if m.state == "MSG_SENT")
    assert await org_credits(sessions, t) == (audience + 500 - sent, 0)  # only what was sent is charged
    assert (await client.post(f"/api/v1/blasts/{blast_id}/cancel", headers=t.user)).status_code == 409


async def test_worker_killed_during_fan_out_loses_nothing_and_duplicates_nothing(
    client: AsyncTestClient[Any], world: World, sessions: Any, settings: Settings
) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    members = await category(sessions, t)
    audience = 3 * BATCH  # a step creates BATCH messages: the kill comes after the first of three steps
    people = await contacts(sessions, t, audience, members)
    r = await post_blast(
        client, t, name="big", content="Hi {{ first_name }}", servicechain_id=chain, category_ids=[str(members)]
    )
    blast_id = r.json()["id"]
    worker = start_worker(settings)
    try:
        deadline = time.monotonic() + 60
        while not await messages_of(sessions, blast_id):
            assert time.monotonic() < deadline, "the fan-out never started"
            await asyncio.sleep(0.05)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        killed_at = len(await messages_of(sessions, blast_id))
        assert 0 < killed_at < audience, killed_at
        worker = start_worker(settings)
        # (on SQLite, writers right after the SIGKILL have been seen to wait out the 15 s busy timeout)
        deadline = time.monotonic() + 90
        while True:  # the fan-out resumes and hands every message on; none is created twice
            messages = await messages_of(sessions, blast_id)
            if len(messages) == audience and not any(m.state == "MSG_PENDING" for m in messages):
                break
            assert time.monotonic() < deadline, f"{len(messages)} messages"
            await asyncio.sleep(0.25)
    finally:
        stop_process(worker)
    assert sorted(m.contact_id for m in messages) == sorted(people)
    # (a send job that died with the worker is the send pipeline's recovery: the sweep fails that
    # attempt once SAQ gives the job up, and the blast completes then)


async def test_dashboard_shows_the_blasts_in_progress_of_its_organization_only(
    client: AsyncTestClient[Any], world: World, sessions: Any
) -> None:
    from tests.test_web_pages import login

    t, other = await tenant(world), await world.org()
    people = await contacts(sessions, t, 4)
    async with sessions() as session:  # a blast half sent: 2 of its 4 messages out of flight
        blast = Blast(
            organization_id=uuid.UUID(t.org_id),
            name="Spring sale",
            content="Hi",
            route=["log"],
            state=BlastState.SENDING,
            audience=4,
            started_at=datetime.now(UTC),
        )
        session.add(blast)
        await session.flush()
        for person, state in zip(people, ["MSG_SENT", "MSG_DELIVERED_USER", "MSG_SENDING", "MSG_PENDING"], strict=True):
            session.add(
                Message(
                    organization_id=blast.organization_id,
                    contact_id=person,
                    blast_id=blast.id,
                    state=state,
                    route=["log"],
                    content="Hi",
                )
            )
        await session.commit()
    member = await world.user(await _org(sessions, t), Role.USER)
    await login(client, member.email)
    home = await client.get("/")
    assert home.status_code == 200 and "Spring sale" in home.text and 'value="0.5"' in home.text, home.text[-2000:]
    await client.post("/logout", headers={"x-csrftoken": client.cookies.get("voluble_csrf", "")})
    client.cookies.clear()
    stranger = await world.user(other, Role.USER)
    await login(client, stranger.email)
    home = await client.get("/")
    assert home.status_code == 200 and "Spring sale" not in home.text and "No blast is being sent" in home.text


async def test_worker_killed_while_sending_loses_nothing_and_sends_nothing_twice(
    client: AsyncTestClient[Any], world: World, sessions: Any, settings: Settings
) -> None:
    """SIGKILL in the middle of the batched sends: every audience member keeps exactly one message, each
    ends sent or failed (a batch lost with its worker fails ``worker_lost``: its sends may have happened,
    so the chain does not send them again), and no message reaches the service twice."""
    import json

    from app.messaging.models import Attempt, AttemptOutcome
    from app.plugins.log import outbox_path

    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    members = await category(sessions, t)
    # more than the blast keeps in flight (WINDOW): the kill comes while batches are still being sent
    audience = 2 * WINDOW + SEND_BATCH
    people = await contacts(sessions, t, audience, members)
    r = await post_blast(
        client, t, name="big", content="Hi {{ first_name }}", servicechain_id=chain, category_ids=[str(members)]
    )
    blast_id = r.json()["id"]
    worker = start_worker(settings)
    try:
        deadline = time.monotonic() + 60
        while not any(m.state == "MSG_SENT" for m in await messages_of(sessions, blast_id)):
            assert time.monotonic() < deadline, "nothing was sent"
            await asyncio.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        at_kill = [m for m in await messages_of(sessions, blast_id) if m.state == "MSG_SENT"]
        assert 0 < len(at_kill) < audience, len(at_kill)
        worker = start_worker(settings)
        deadline = time.monotonic() + 120
        while True:
            messages = await messages_of(sessions, blast_id)
            if len(messages) == audience and all(m.state in ("MSG_SENT", "MSG_FAILED") for m in messages):
                break
            assert time.monotonic() < deadline, collections_of(messages)
            await asyncio.sleep(0.25)
    finally:
        stop_process(worker)
    assert sorted(m.contact_id for m in messages) == sorted(people)  # one message each, none lost
    async with sessions() as session:
        attempts = list(await session.scalars(select(Attempt).where(Attempt.message_id.in_([m.id for m in messages]))))
    sent_attempts: dict[uuid.UUID, int] = {}
    for a in attempts:
        if a.outcome == AttemptOutcome.SENT:
            sent_attempts[a.message_id] = sent_attempts.get(a.message_id, 0) + 1
    assert set(sent_attempts.values()) <= {1}
    lost = [a for a in attempts if a.outcome == AttemptOutcome.FAILED]
    assert all((a.error or "").startswith("worker_lost") for a in lost), {a.error for a in lost}
    lines = outbox_path(settings.var_dir).read_text().splitlines()
    seen: dict[str, int] = {}
    for line in lines:
        key = json.loads(line)["message_id"]
        seen[key] = seen.get(key, 0) + 1
    assert [k for k, c in seen.items() if c > 1] == [], "a message reached the service twice"
    assert {str(m.id) for m in messages if m.state == "MSG_SENT"} <= set(seen)


def collections_of(messages: list[Message]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in messages:
        counts[str(m.state)] = counts.get(str(m.state), 0) + 1
    return counts
