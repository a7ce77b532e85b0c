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
from app.servicehost.ratelimit import GO, Pacer, effective_rate, lane_ahead, lane_width


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


async def test_single_sends_go_ahead_of_the_lane_of_blast_traffic(clients: tuple[Redis, Redis]) -> None:
    """Twelve blast sends wait in the lane of two processes (5/s: 2.4 s of turns); a single send asked
    for meanwhile books the turn after the lane's next one, not after all twelve. Together they keep the
    rate: one send every 200 ms."""
    a, b = (Pacer(c, "unused") for c in clients)
    bucket = key()
    until = time.time() + 30
    moments: list[float] = []

    async def blast_send(pacer: Pacer) -> None:
        turn = await pacer.lane(bucket, 5.0, until)
        assert turn.reserved
        moments.append(time.time())  # lane() slept until the turn

    lane = [asyncio.create_task(blast_send(p)) for _ in range(6) for p in (a, b)]
    await asyncio.sleep(0.5)
    single = await a.reserve(bucket, 5.0)
    assert single.reserved and single.wait <= lane_ahead(5.0) + 0.2 + 0.05, single  # FCFS would be ≥ 1.8 s
    single_at = time.time() + single.wait
    await asyncio.gather(*lane)
    sends = sorted([*moments, single_at])
    assert all(later - earlier > 0.15 for earlier, later in itertools.pairwise(sends)), sends
    assert max(moments) > single_at + 1.0  # most of the lane went after the single send
    assert sends[-1] - sends[0] == pytest.approx(12 * 0.2, abs=0.25)


async def test_a_lane_turn_not_had_in_time_is_not_waited_for(clients: tuple[Redis, Redis]) -> None:
    pacer = Pacer(clients[0], "unused")
    bucket = key()
    for _ in range(10):  # single sends book 2 s of turns at 5/s
        await pacer.reserve(bucket, 5.0)
    started = time.monotonic()
    turn = await pacer.lane(bucket, 5.0, until=time.time() + 0.5)
    assert not turn.reserved and turn.wait == pytest.approx(2.0, abs=0.1)
    assert time.monotonic() - started < 0.2  # answered at once: its turn could not come by then
    assert (await pacer.reserve(bucket, 5.0)).wait == pytest.approx(2.0, abs=0.1)  # nothing was booked
    # a turn that comes in time is waited for, in the lane (asleep until near it, then booked)
    started = time.monotonic()
    assert (await pacer.lane(bucket, 5.0, until=time.time() + 5)).reserved
    assert time.monotonic() - started == pytest.approx(2.2, abs=0.15)


def test_rates() -> None:
    assert Pacer.interval(5) == 200 and Pacer.interval(0.25) == 4000
    assert effective_rate(None, None) is None
    assert effective_rate(30.0, None) == 30.0 and effective_rate(None, 2.0) == 2.0
    assert effective_rate(30.0, 2.0) == 2.0 and effective_rate(1.0, 5.0) == 1.0  # the smaller holds
    assert lane_ahead(1000) == 0.1 and lane_ahead(5) == 0.2 and lane_ahead(0.5) == 2.0  # at least one interval
    # a batch's sends in the lane at once: what the rate serves in half the longest wait, 1 to 10
    assert lane_width(None, 3, 10) == 10 and lane_width(100, 3, 10) == 10
    assert lane_width(5, 3, 10) == 7 and lane_width(2, 3, 10) == 3 and lane_width(0.1, 3, 10) == 1
