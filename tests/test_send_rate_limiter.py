"""The send rate bucket (app/servicehost/ratelimit.py) on both Redis servers: the embedded 6.2 and the system one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.embedded_redis import free_port
from app.servicehost.ratelimit import GO, Pace, Pacer, Turn, deferral, effective_rate


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[tuple[Redis, Redis]]:
    """Two clients with their own connections, as two worker processes have."""
    a, b = Redis.from_url(redis_url), Redis.from_url(redis_url)
    yield a, b
    await a.aclose()
    await b.aclose()


def key() -> str:
    return f"t{uuid.uuid4().hex[:10]}:send-rate:paced:{uuid.uuid4()}"


async def moments(redis: Redis, bucket: str) -> list[float]:
    return [score / 1000 for _, score in await redis.zrange(bucket, 0, -1, withscores=True)]


def most_in_a_window(times: list[float], window: float = 1.0) -> int:
    """The most moments any half-open window [t, t + window) holds."""
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


async def test_two_processes_share_one_pace(clients: tuple[Redis, Redis]) -> None:
    a, b = (Pacer(c, "unused") for c in clients)
    bucket = key()
    turns = await asyncio.gather(*(p.reserve(bucket, 5.0) for _ in range(6) for p in (a, b)))
    assert all(t.reserved for t in turns)
    waits = sorted(t.wait for t in turns)
    # 5 at once, 5 a second later, 2 a second after that: each turn waits once, for its own moment
    assert waits[:5] == pytest.approx([0.0] * 5, abs=0.2)
    assert waits[5:10] == pytest.approx([1.0] * 5, abs=0.2)
    assert waits[10:] == pytest.approx([2.0] * 2, abs=0.2)
    given = await moments(clients[0], bucket)
    assert len(given) == 12 and most_in_a_window(given) == 5
    assert 0 < await clients[0].pttl(bucket) <= 4000  # the bucket expires once its window has passed


async def test_a_turn_beyond_max_wait_reserves_nothing(clients: tuple[Redis, Redis]) -> None:
    pacer = Pacer(clients[0], "unused")
    bucket = key()
    for _ in range(2):
        assert (await pacer.reserve(bucket, 2.0, max_wait=0.5)).reserved
    late = await pacer.reserve(bucket, 2.0, max_wait=0.5)
    assert not late.reserved and late.wait == pytest.approx(1.0, abs=0.2)
    assert len(await moments(clients[0], bucket)) == 2
    assert deferral(late, 0.5) == 1 and deferral(Turn(False, 7.2), 2.0) == 6
    # without a bound the same turn is given, one window on
    assert (await pacer.reserve(bucket, 2.0)).wait == pytest.approx(1.0, abs=0.2)


async def test_slow_rates_and_counts(clients: tuple[Redis, Redis]) -> None:
    pacer = Pacer(clients[0], "unused")
    slow = key()
    assert [round((await pacer.reserve(slow, 0.5)).wait) for _ in range(3)] == [0, 2, 4]  # one every 2 s
    batch = key()
    assert (await pacer.reserve(batch, 5.0, count=3)).wait == pytest.approx(0.0, abs=0.2)
    assert (await pacer.reserve(batch, 5.0, count=2)).wait == pytest.approx(0.0, abs=0.2)
    third = await pacer.reserve(batch, 5.0, count=3)  # 3 more fit once the first 3 left the window
    assert third.wait == pytest.approx(1.0, abs=0.2)
    assert most_in_a_window(await moments(clients[0], batch)) == 5


async def test_redis_unreachable_sends_unpaced() -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    started = time.monotonic()
    assert await Pacer(dead, "unused").reserve(key(), 1.0) == GO
    assert time.monotonic() - started < 5
    await dead.aclose()


def test_rates() -> None:
    assert Pace.of(30) == Pace(30, 1.0) and Pace.of(2.5) == Pace(2, 1.0) and Pace.of(0.25) == Pace(1, 4.0)
    assert effective_rate(None, None) is None
    assert effective_rate(30.0, None) == 30.0 and effective_rate(None, 2.0) == 2.0
    assert effective_rate(30.0, 2.0) == 2.0 and effective_rate(1.0, 5.0) == 1.0  # the smaller holds
