"""Blast traffic at speed (docs/decisions/0029-blast-throughput.md): single messages go ahead of a large blast,
and a batch whose send job Redis lost is sent by the sweep, each message once."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from saq import Job, Status
from sqlalchemy import func, insert, select

from app.config import Settings
from app.db.config import write_transaction
from app.messaging import bulk
from app.messaging.coordinator import Coordinator
from app.messaging.models import Attempt, CreditState, Message, MessageState
from app.plugins.log import outbox_path
from app.queues import BLAST_QUEUE, SEND_BATCH, make_queue
from app.servicehost.registry import load_registry
from tests.conftest import World
from tests.helpers import start_worker, stop_process
from tests.pipeline import fast_settings, new_contact, setup_chain, tenant
from tests.test_blasts import category, contacts, post_blast, wait_blast


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


async def blast_sent(sessions: Any, blast_id: str) -> int:
    async with sessions() as session:
        return int(
            await session.scalar(
                select(func.count()).where(Message.blast_id == uuid.UUID(blast_id), Message.state == MessageState.SENT)
            )
            or 0
        )


async def time_to_sent(
    client: AsyncTestClient[Any], headers: dict[str, str], body: dict[str, Any], sessions: Any, blast_id: str
) -> tuple[float, int]:
    """Seconds from the POST of a single message to its MSG_SENT, and how many of the blast were sent then."""
    start = time.monotonic()
    r = await client.post("/api/v1/messages", json=body, headers=headers)
    assert r.status_code == 201, r.text
    while time.monotonic() - start < 30:
        state = (await client.get(f"/api/v1/messages/{r.json()['id']}", headers=headers)).json()["state"]
        if state == "MSG_SENT":
            return time.monotonic() - start, await blast_sent(sessions, blast_id)
        await asyncio.sleep(0.05)
    raise AssertionError("the single message was not sent within 30 s")


@pytest.mark.usefixtures("worker")
async def test_single_messages_go_ahead_of_a_large_blast(
    client: AsyncTestClient[Any], world: World, sessions: Any
) -> None:
    audience = 3000
    big, other = await tenant(world), await tenant(world)
    chain = await setup_chain(client, big, ["log"])
    other_chain = await setup_chain(client, other, ["log"])
    members = await category(sessions, big)
    await contacts(sessions, big, audience, members)
    mine = {"contact_id": await new_contact(client, big), "servicechain_id": chain, "content": "Hi"}
    theirs = {"contact_id": await new_contact(client, other), "servicechain_id": other_chain, "content": "Hi"}
    r = await post_blast(
        client, big, name="big", content="Hi {{ first_name }}", servicechain_id=chain, category_ids=[str(members)]
    )
    assert r.status_code == 201, r.text
    blast_id = r.json()["id"]
    deadline = time.monotonic() + 60
    while await blast_sent(sessions, blast_id) == 0:  # the blast is sending
        assert time.monotonic() < deadline, "the blast never started sending"
        await asyncio.sleep(0.05)
    (other_org, other_then), (same_org, same_then) = await asyncio.gather(
        time_to_sent(client, other.user, theirs, sessions, blast_id),
        time_to_sent(client, big.user, mine, sessions, blast_id),
    )
    assert other_org < 5 and same_org < 5, (other_org, same_org)
    # each was sent while the blast was still sending: otherwise this would not be a test of fairness
    assert other_then < audience and same_then < audience, (other_then, same_then)
    done = await wait_blast(client, big, blast_id, timeout=120)
    assert done["stats"]["MSG_SENT"] == audience


async def handed_off(sessions: Any, settings: Settings, t: Any, n: int) -> tuple[list[uuid.UUID], list[bulk.Batch]]:
    """``n`` pending messages of ``t`` through ``[log]``, handed on in bulk (attempts pending, MSG_SENDING),
    their ``send_batch`` jobs never enqueued."""
    people = await contacts(sessions, t, n)
    org_id = uuid.UUID(t.org_id)
    ids = [uuid.uuid4() for _ in people]
    async with sessions() as session:
        await session.execute(
            insert(Message),
            [
                {
                    "id": i,
                    "organization_id": org_id,
                    "contact_id": c,
                    "route": ["log"],
                    "content": "Hi",
                    "credit": CreditState.NONE,
                    "state": MessageState.PENDING,
                }
                for i, c in zip(ids, people, strict=True)
            ],
        )
        await session.commit()
    registry = load_registry(settings)
    await registry.check()
    coordinator = Coordinator(settings=settings, registry=registry, queues={})
    async with sessions() as session, write_transaction(session):
        batches = await bulk.hand_off(coordinator, session, ids)
    return ids, batches


async def sent_by_a_worker(settings: Settings, sessions: Any, ids: list[uuid.UUID], timeout: float = 60) -> None:
    """A worker process runs until every one of ``ids`` is MSG_SENT, and a second sweep after that."""
    worker = start_worker(settings)
    try:
        deadline = time.monotonic() + timeout
        while True:
            async with sessions() as session:
                states = list(await session.scalars(select(Message.state).where(Message.id.in_(ids))))
            if set(states) == {"MSG_SENT"}:
                break
            assert time.monotonic() < deadline, states
            await asyncio.sleep(0.25)
        await asyncio.sleep(2)  # a second sweep finds nothing more to send
    finally:
        stop_process(worker)


async def test_a_batch_whose_job_was_lost_is_sent_by_the_sweep_once(
    client: AsyncTestClient[Any], world: World, sessions: Any, settings: Settings
) -> None:
    t = await tenant(world)
    ids, batches = await handed_off(sessions, settings, t, SEND_BATCH + 50)
    assert [len(b.attempt_ids) for b in batches] == [SEND_BATCH, 50]
    async with sessions() as session:
        keys = set(await session.scalars(select(Attempt.job_key).where(Attempt.message_id.in_(ids))))
        assert keys == {b.key for b in batches}
        assert set(await session.scalars(select(Message.state).where(Message.id.in_(ids)))) == {"MSG_SENDING"}
    await sent_by_a_worker(settings, sessions, ids)
    lines = [json.loads(line) for line in outbox_path(settings.var_dir).read_text().splitlines()]
    logged = [line["message_id"] for line in lines if uuid.UUID(line["message_id"]) in set(ids)]
    assert sorted(logged) == sorted(str(i) for i in ids)  # each once
    provider_ids = {line["message_id"]: line["provider_message_id"] for line in lines}
    async with sessions() as session:  # each message and its attempt got its own provider id (one UPDATE each)
        rows = await session.execute(
            select(Message.id, Message.provider_message_id, Attempt.provider_message_id)
            .join(Attempt, Attempt.message_id == Message.id)
            .where(Message.id.in_(ids))
        )
        assert {str(m): (p, a) for m, p, a in rows} == {str(i): (provider_ids[str(i)],) * 2 for i in ids}


async def test_a_deferred_batch_whose_re_enqueue_was_lost_goes_on_and_sends_nothing_twice(
    client: AsyncTestClient[Any], world: World, sessions: Any, settings: Settings
) -> None:
    """A ``send_batch`` job deferred itself under its send rate (5 sent, 15 left) and its process died
    before enqueueing the rest: the sweep reports the 5 outcomes it carried and enqueues the same job for
    the 15. Each message is sent once: the 5 keep the provider ids of their first run."""
    t = await tenant(world)
    ids, [batch] = await handed_off(sessions, settings, t, 20)
    async with sessions() as session:  # long started: stale for the sweep
        attempts = list(await session.scalars(select(Attempt).where(Attempt.message_id.in_(ids))))
        for a in attempts:
            a.started_at = a.started_at - timedelta(hours=1)
        await session.commit()
    first, rest = attempts[:5], attempts[5:]
    outcomes = [{"attempt_id": str(a.id), "outcome": "sent", "provider_message_id": f"run1-{a.id}"} for a in first]
    queue = make_queue(settings, BLAST_QUEUE)
    try:
        job = Job(
            function="send_batch", kwargs={"attempt_ids": [str(a.id) for a in attempts]}, key=batch.key, queue=queue
        )
        deferred = {
            "outcome": "deferred",
            "turn_at": time.time(),
            "outcomes": outcomes,
            "remaining": [str(a.id) for a in rest],
        }
        await queue.update(job, status=Status.COMPLETE, result=deferred)
        await sent_by_a_worker(settings, sessions, ids)
        again = await queue.job(batch.key)
    finally:
        await queue.disconnect()
    assert again is not None and again.kwargs is not None
    assert again.kwargs["deferrals"] == 1 and again.kwargs["attempt_ids"] == [str(a.id) for a in rest]
    lines = [json.loads(line) for line in outbox_path(settings.var_dir).read_text().splitlines()]
    logged = [line["message_id"] for line in lines if uuid.UUID(line["message_id"]) in set(ids)]
    assert sorted(logged) == sorted(str(a.message_id) for a in rest)  # the 15, each once; never the 5 again
    async with sessions() as session:
        provider = dict(
            (
                await session.execute(
                    select(Attempt.id, Attempt.provider_message_id).where(Attempt.message_id.in_(ids))
                )
            ).all()
        )
        assert len(list(await session.scalars(select(Attempt.id).where(Attempt.message_id.in_(ids))))) == 20
    assert all(provider[a.id] == f"run1-{a.id}" for a in first)
    assert all(provider[a.id] and not provider[a.id].startswith("run1-") for a in rest)


async def test_moves_in_bulk_write_their_events_for_subscribed_organizations(
    client: AsyncTestClient[Any], world: World, sessions: Any
) -> None:
    from app.messaging import state
    from app.webhooks.models import WebhookEvent

    subscribed, silent = await tenant(world), await tenant(world)
    hook = {"url": "http://127.0.0.1:9/hook", "event_types": ["message.state_changed"]}
    assert (await client.post("/api/v1/webhooks", json=hook, headers=subscribed.admin)).status_code == 201
    ids: dict[str, list[uuid.UUID]] = {}
    people_of = {t.org_id: await contacts(sessions, t, 3) for t in (subscribed, silent)}
    async with sessions() as session:
        for t in (subscribed, silent):
            people = people_of[t.org_id]
            ids[t.org_id] = [uuid.uuid4() for _ in people]
            rows = [
                {"id": i, "organization_id": uuid.UUID(t.org_id), "contact_id": c, "route": ["log"], "content": "Hi"}
                for i, c in zip(ids[t.org_id], people, strict=True)
            ]
            await session.execute(insert(Message), rows)
        moved = await state.move_many(session, [i for v in ids.values() for i in v], MessageState.FAILED)
        assert len(moved) == 6
        await session.commit()
        events = list(await session.scalars(select(WebhookEvent)))
    assert sorted(str(e.payload["id"]) for e in events) == sorted(str(i) for i in ids[subscribed.org_id])
    assert {e.type for e in events} == {"message.state_changed"}
    assert all(e.payload["state"] == "MSG_FAILED" for e in events)


async def test_the_coordinators_status_cache_outlives_the_session_that_read_it(
    settings: Settings, sessions: Any
) -> None:
    from app.servicehost.registry import check_and_record

    registry = load_registry(settings)
    await check_and_record(registry, sessions)
    coordinator = Coordinator(settings=settings, registry=registry, queues={})
    async with sessions() as session:
        statuses = await coordinator.statuses(session)
        await session.rollback()  # expires what the session loaded
    assert statuses["log"].status == "available"  # plain values: no DetachedInstanceError
    async with sessions() as session:
        assert await coordinator.statuses(session) is statuses  # cached (STATUS_TTL)
