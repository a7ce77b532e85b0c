"""SAQ's sweep and a job caught between its dequeue and its start (app/queues.py ``RedisQueue``),
on both Redis servers."""

from __future__ import annotations

import asyncio
import uuid

from saq import Status
from saq.queue.redis import RedisQueue
from saq.utils import now

from app.queues import ORPHAN_AFTER
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
