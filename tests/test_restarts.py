"""Restarts during a run (docs/decisions/0036), real processes on PostgreSQL and the system Redis:
workers SIGTERMed and restarted in a loop during a blast of 2,000 messages, and PostgreSQL itself
restarted while messages are being sent. Every message ends sent or failed, none is lost, and none is
sent twice: each has one successful attempt and one line in the ``log`` service's outbox.

PostgreSQL is a private cluster of this module (tests/private_postgres.py): the shared server is never
restarted."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import func, select

from app.config import Settings
from app.messaging.models import Attempt, AttemptOutcome, Message
from app.plugins.log import outbox_path
from tests import private_postgres
from tests.conftest import SYSTEM_REDIS_URL, World
from tests.helpers import start_worker, stop_process
from tests.pipeline import fast_settings, setup_chain, tenant
from tests.test_blasts import category, contacts, post_blast

DONE = ("MSG_SENT", "MSG_FAILED")
#: the issue's run of 2,000 messages; a smaller one proves the same on a machine too loaded for it
RUN = int(os.environ.get("VOLUBLE_TEST_RESTART_MESSAGES", "2000"))


@pytest.fixture(scope="module")
def private_pg() -> Iterator[private_postgres.PrivatePostgres]:
    if private_postgres.binaries() is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl, postgres) to run a private cluster")
    server = private_postgres.create()
    yield server
    private_postgres.destroy(server)


@pytest.fixture
def db_url(private_pg: private_postgres.PrivatePostgres) -> str:
    return private_pg.url


@pytest.fixture
def redis_url() -> str:
    return SYSTEM_REDIS_URL  # PostgreSQL's pairing (docs/decisions/0011)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    fast = fast_settings(settings)
    # the default heartbeat: on a loaded machine a 2 s one takes a busy worker for a dead one
    return dataclasses.replace(fast, worker=dataclasses.replace(fast.worker, heartbeat_seconds=10))


async def blasts(client: AsyncTestClient[Any], world: World, sessions: Any, count: int, size: int) -> list[str]:
    """``count`` blasts of ``size`` contacts each, of as many organizations (their fan-outs run side by side)."""
    ids = []
    for _ in range(count):
        t = await tenant(world)
        chain = await setup_chain(client, t, ["log"])
        members = await category(sessions, t)
        await contacts(sessions, t, size, members)
        body = {
            "name": "run",
            "content": "Hi {{ first_name }}",
            "servicechain_id": chain,
            "category_ids": [str(members)],
        }
        r = await post_blast(client, t, **body)
        assert r.status_code == 201, r.text
        ids.append(str(r.json()["id"]))
    return ids


async def progress(sessions: Any, blast_ids: list[str]) -> collections.Counter[str] | None:
    """The blasts' messages by state; None while the database is away."""
    try:
        async with sessions() as session:
            rows = await session.execute(
                select(Message.state, func.count())
                .where(Message.blast_id.in_([uuid.UUID(b) for b in blast_ids]))
                .group_by(Message.state)
            )
            return collections.Counter({str(getattr(s, "value", s)): c for s, c in rows})
    except Exception:  # the test's own pool meets the restart too
        return None


def finished(counts: collections.Counter[str] | None, n: int) -> bool:
    return counts is not None and sum(counts[s] for s in DONE) == n


async def assert_each_sent_once(sessions: Any, settings: Settings, blast_ids: list[str], n: int) -> None:
    async with sessions() as session:
        of_blasts = Message.blast_id.in_([uuid.UUID(b) for b in blast_ids])
        messages = list(await session.scalars(select(Message).where(of_blasts)))
        ids = {m.id for m in messages}
        attempts = list(await session.scalars(select(Attempt).where(Attempt.message_id.in_(ids))))
    assert len(messages) == n
    states = collections.Counter(str(m.state.value) for m in messages)
    errors = collections.Counter(a.error for a in attempts if a.outcome == AttemptOutcome.FAILED)
    assert states == {"MSG_SENT": n}, (states, errors)  # none failed either: a graceful stop loses no worker
    sent = collections.Counter(a.message_id for a in attempts if a.outcome == AttemptOutcome.SENT)
    assert set(sent) == ids and set(sent.values()) == {1}, "one successful attempt per message"
    assert not [a for a in attempts if a.outcome == AttemptOutcome.PENDING]
    lines = outbox_path(settings.var_dir).read_text().splitlines()
    outbox = collections.Counter(uuid.UUID(json.loads(line)["message_id"]) for line in lines)
    assert {i for i, c in outbox.items() if c > 1} == set(), "sent twice"
    assert set(outbox) == ids


async def worker_ids(redis: Redis, settings: Settings) -> set[bytes]:
    """The SAQ workers of the send queue that announced themselves (at start, then every 10 s)."""
    return {k async for k in redis.scan_iter(f"saq:{settings.redis.queue_prefix}-send:worker_info:*")}


async def test_workers_sigtermed_and_restarted_in_a_loop_lose_and_repeat_nothing(
    client: AsyncTestClient[Any], world: World, sessions: Any, settings: Settings, redis: Redis
) -> None:
    n = RUN - RUN % 4
    blast_ids = await blasts(client, world, sessions, 4, n // 4)
    # one job at a time per queue: the run lasts long enough for restarts on a quiet machine too
    slow = {"VOLUBLE_WORKER_CONCURRENCY": "1"}
    workers = [start_worker(settings, **slow), start_worker(settings, **slow)]
    codes: list[int] = []
    try:
        while len(await worker_ids(redis, settings)) < 2:
            await asyncio.sleep(0.2)
        deadline = time.monotonic() + 120 + n  # a cap, for loaded machines
        turn = 0
        while not finished(counts := await progress(sessions, blast_ids), n):
            assert time.monotonic() < deadline, counts
            # a rolling restart (the first at once: on a quiet machine the blasts take a few seconds): one of the two is stopped (SIGTERM) and started again, and the other
            # is stopped only once the new one is taking jobs
            known = await worker_ids(redis, settings)
            old = workers[turn % 2]
            old.send_signal(signal.SIGTERM)
            codes.append(await asyncio.to_thread(old.wait, 60))
            workers[turn % 2] = start_worker(settings, **slow)
            while not (await worker_ids(redis, settings)) - known:
                assert time.monotonic() < deadline, "the restarted worker never started"
                await asyncio.sleep(0.2)
            turn += 1
            await asyncio.sleep(1.0)
    finally:
        for w in workers:
            stop_process(w)
    assert codes and set(codes) == {0}, codes
    # at least one rolling restart with the run in flight (the first comes at once); on a loaded machine
    # many more, while on a quiet one the 2,000 messages outpace a second worker start-up
    assert len(codes) >= 1, f"only {len(codes)} restarts during the run"
    await assert_each_sent_once(sessions, settings, blast_ids, n)


async def test_postgres_restarted_while_sending_loses_and_repeats_nothing(
    client: AsyncTestClient[Any],
    world: World,
    sessions: Any,
    settings: Settings,
    private_pg: private_postgres.PrivatePostgres,
) -> None:
    n = 1000  # sent in batches of 100: the restart must find most of the run still to do
    blast_ids = await blasts(client, world, sessions, 2, n // 2)
    worker = start_worker(settings)
    try:
        deadline = time.monotonic() + 120
        while (counts := await progress(sessions, blast_ids)) is None or counts["MSG_SENT"] < 1:
            assert time.monotonic() < deadline, counts
            await asyncio.sleep(0.1)
        assert not finished(counts, n), "the run ended before the restart"
        await asyncio.to_thread(private_pg.stop)  # fast: every connection is cut
        await asyncio.sleep(3.0)
        await asyncio.to_thread(private_pg.start)
        while not finished(await progress(sessions, blast_ids), n):
            assert worker.poll() is None, "the worker died"
            assert time.monotonic() < deadline + 60, await progress(sessions, blast_ids)
            await asyncio.sleep(0.25)
        assert worker.poll() is None, "the worker died"
    finally:
        code = stop_process(worker)
    assert code == 0
    await assert_each_sent_once(sessions, settings, blast_ids, n)
