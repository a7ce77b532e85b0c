"""The send rate bucket (app/servicehost/ratelimit.py) on both Redis servers: the embedded 6.2 and the system one."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.embedded_redis import free_port
from app.servicehost.ratelimit import GO, Pacer, effective_rate


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[tuple[Redis, Redis]]:
    """Two clients with their own connections, as two worker processes have."""
    a, b = Redis.from_url(redis_url), Redis.from_url(redis_url)
    yield a, b
    await a.aclose()
    await b.aclose()


def key() -> str:
    return f"t{uuid.uuid4().hex[:10]}:send-rate:paced:{uuid.uuid4()}"


async def test_two_processes_share_one_pace(clients: tuple[Redis, Redis]) -> None:
    a, b = (Pacer(c, "unused") for c in clients)
    bucket = key()
    turns = await asyncio.gather(*(p.reserve(bucket, 5.0) for _ in range(6) for p in (a, b)))
    assert all(t.reserved for t in turns)
    # one every 200 ms, in the order asked, whichever process asked: each waits once, for its own turn
    waits = sorted(t.wait for t in turns)
    assert waits == pytest.approx([i * 0.2 for i in range(12)], abs=0.1)
    assert all(later - earlier > 0.15 for earlier, later in itertools.pairwise(waits))
    assert 0 < await clients[0].pttl(bucket) <= 4000  # the bucket expires once its turns have passed


async def test_a_turn_beyond_max_wait_reserves_nothing(clients: tuple[Redis, Redis]) -> None:
    pacer = Pacer(clients[0], "unused")
    bucket = key()
    for _ in range(2):
        assert (await pacer.reserve(bucket, 2.0, max_wait=0.7)).reserved  # now, and in 0.5 s
    late = await pacer.reserve(bucket, 2.0, max_wait=0.7)
    assert not late.reserved and late.wait == pytest.approx(1.0, abs=0.1)
    # nothing was reserved: without a bound the same turn is given
    assert (await pacer.reserve(bucket, 2.0)).wait == pytest.approx(1.0, abs=0.1)


async def test_slow_rates_and_counts(clients: tuple[Redis, Redis]) -> None:
    pacer = Pacer(clients[0], "unused")
    slow = key()
    assert [round((await pacer.reserve(slow, 0.5)).wait) for _ in range(3)] == [0, 2, 4]  # one every 2 s
    batch = key()
    assert (await pacer.reserve(batch, 5.0, count=3)).wait == pytest.approx(0.0, abs=0.1)
    # 3 sends at once: the next turn is 3 intervals later
    assert (await pacer.reserve(batch, 5.0, count=2)).wait == pytest.approx(0.6, abs=0.1)
    assert (await pacer.reserve(batch, 5.0)).wait == pytest.approx(1.0, abs=0.1)


async def test_redis_unreachable_sends_unpaced() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    started = time.monotonic()
    assert await Pacer(dead, "unused").reserve(key(), 1.0) == GO
    assert time.monotonic() - started < 5
    await dead.aclose()


def test_rates() -> None:
    assert Pacer.interval(5) == 200 and Pacer.interval(0.25) == 4000
    assert effective_rate(None, None) is None
    assert effective_rate(30.0, None) == 30.0 and effective_rate(None, 2.0) == 2.0
    assert effective_rate(30.0, 2.0) == 2.0 and effective_rate(1.0, 5.0) == 1.0  # the smaller holds
