"""SAQ's sweep, a job caught between its dequeue and its start, and a dead worker's job swept at our
sweep interval (app/queues.py ``RedisQueue``), on both Redis servers."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

from saq import Status
from saq.queue.redis import RedisQueue
from saq.utils import now

from app.config import Settings
from app.queues import ORPHAN_AFTER, make_queue
from app.queues import RedisQueue as SweepSafeQueue


async def just_dequeued(queue: RedisQueue) -> str:
    """A job in the state a worker leaves it for an instant: in the active list, still stored QUEUED."""
    await queue.enqueue("noop", key=f"k{uuid.uuid4().hex[:8]}", timeout=30)
    job = await queue.dequeue(timeout=1)
    assert job is not None and job.status == Status.QUEUED
    return job.key


async def status(queue: RedisQueue, key: str) -> Status | None:
    job = await queue.job(key)
    return job.status if job else None


async def test_a_job_being_started_is_not_swept(redis_url: str) -> None:
    name = f"t{uuid.uuid4().hex[:10]}-send"
    plain, safe = RedisQueue.from_url(redis_url, name=name + "-plain"), SweepSafeQueue.from_url(redis_url, name=name)
    try:
        # SAQ's own sweep aborts it (and re-queues it, its attempts not counted yet): the race seen under load
        key = await just_dequeued(plain)
        assert await plain.sweep(lock=1, abort=0.1) == [f"saq:job:{name}-plain:{key}"]

        key = await just_dequeued(safe)
        assert await safe.sweep(lock=1, abort=0.1) == [] and await status(safe, key) == Status.QUEUED
        job = await safe.job(key)
        assert job is not None
        await safe.update(job, status=Status.ACTIVE, started=now())  # its worker starts it: never swept
        await asyncio.sleep(1.1)  # the sweep lock expires
        assert await safe.sweep(lock=1, abort=0.1) == [] and await status(safe, key) == Status.ACTIVE

        # a worker that died in that instant: a sweep that finds it so ORPHAN_AFTER later sweeps it
        dead = await just_dequeued(safe)
        await asyncio.sleep(1.1)
        assert await safe.sweep(lock=1, abort=0.1) == []
        await asyncio.sleep(ORPHAN_AFTER + 0.2)
        assert await safe.sweep(lock=1, abort=0.1) == [f"saq:job:{name}:{dead}"]
    finally:
        await plain.disconnect()
        await safe.disconnect()


async def test_a_dead_workers_job_is_swept_at_the_sweep_interval_not_once_a_minute(redis_url: str) -> None:
    """SAQ's workers call ``sweep()`` with its default lock, 60 s across every worker: a worker that swept,
    then died, kept the others from sweeping its stuck job for up to a minute. Ours take the sweep
    interval (``VOLUBLE_SWEEP_SECONDS``)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings.from_env()
    fast = dataclasses.replace(
        settings,
        redis=dataclasses.replace(settings.redis, url=redis_url, queue_prefix=name),
        worker=dataclasses.replace(settings.worker, sweep_seconds=1),
    )
    queue = make_queue(fast, "send")
    default = make_queue(dataclasses.replace(fast, worker=dataclasses.replace(fast.worker, sweep_seconds=10)), "x")
    plain = RedisQueue.from_url(redis_url, name=name + "-plain")
    try:
        assert default.sweep_lock == 10 and queue.sweep_lock == 1
        dead: dict[str, list[str]] = {queue.name: [], plain.name: []}
        for q, count in ((queue, 3), (plain, 1)):
            for i in range(count):
                await q.enqueue("noop", key=f"beats{i}", timeout=300, heartbeat=1)
                job = await q.dequeue(timeout=1)
                assert job is not None
                await q.update(job, status=Status.ACTIVE, started=now(), attempts=1)  # started; its worker dies
                dead[q.name].append(job.key)
            assert await q.sweep() == []  # a sweep as a worker runs it: alive (touched just now)
        await asyncio.sleep(2.2)  # their heartbeat missed
        # ours: the lock of the last sweep has expired, the stuck jobs are swept (once: one run, aborted),
        # without waiting for their dead worker to stop them (SAQ waits ``abort`` seconds for each in turn)
        swept = await asyncio.wait_for(queue.sweep(abort=30), timeout=20)
        assert sorted(swept) == [f"saq:job:{name}-send:{key}" for key in sorted(dead[queue.name])]
        assert [await status(queue, key) for key in dead[queue.name]] == [Status.ABORTED] * 3
        # SAQ's own queue still holds the lock taken two seconds ago: nothing swept for a minute
        assert await plain.sweep() == [] and await status(plain, dead[plain.name][0]) == Status.ACTIVE
    finally:
        for q in (queue, default, plain):
            await q.disconnect()
