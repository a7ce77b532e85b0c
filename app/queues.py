"""SAQ queues on Redis, the enqueue options of every job, and the job context: the one module that the
domains (which enqueue) and ``app.worker`` (which runs) both import. Redis holds queues only; the database
stays the source of truth.

- ``default``: system jobs (mails, plugin re-checks, the sweep);
- ``send``: one job per attempt: a worker calls a plugin and reports the outcome as an event;
- ``blast``: blast traffic, one job per batch of attempts of one organization and service (``send_batch``),
  on its own queue so that it never holds back single sends (every worker process serves both);
- ``events``: the coordinator applies outcomes (state machine, fallback, credits);
- ``webhooks``: the webhook dispatcher and one job per delivery attempt (a slow receiver delays no send).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import saq.queue.redis
from saq import Queue, Status
from saq.types import Context
from saq.utils import now as now_ms
from saq.utils import seconds
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings

DEFAULT_QUEUE = "default"
SEND_QUEUE = "send"
BLAST_QUEUE = "blast"
EVENTS_QUEUE = "events"
WEBHOOKS_QUEUE = "webhooks"
QUEUE_NAMES = (DEFAULT_QUEUE, SEND_QUEUE, BLAST_QUEUE, EVENTS_QUEUE, WEBHOOKS_QUEUE)

# Enqueue options of each job: SAQ's ``retries`` counts total attempts.

#: ``send_password_reset`` (app/tenants/jobs.py), enqueued by app/tenants/flows.py
PASSWORD_RESET_OPTIONS: dict[str, Any] = {"timeout": 60, "retries": 5, "retry_delay": 2.0, "retry_backoff": True}


def event_job_options(heartbeat: int) -> dict[str, Any]:
    """``message_sent`` / ``attempt_failed`` / ``apply_outcomes`` (app/messaging/jobs.py), enqueued by the send
    jobs and the sweep. Applying an event twice changes nothing, so a run that dies is run again (5 in
    all); the heartbeat (:func:`beating`) makes a dead worker's event job found within seconds, where its
    timeout alone left a blast batch's outcomes unapplied for a minute."""
    return {"timeout": 60, "heartbeat": heartbeat, "retries": 5, "retry_delay": 1.0, "retry_backoff": True}


@contextlib.asynccontextmanager
async def beating(job: Any) -> AsyncIterator[None]:
    """While the block runs, ``job`` (SAQ's, ``ctx["job"]``; None: called directly) proves its worker alive
    three times per heartbeat; an update in flight lands before the block ends (and the job is finished)."""
    if job is None or not job.heartbeat:
        yield
        return

    async def beat(every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await job.update()

    task = asyncio.create_task(beat(max(job.heartbeat / 3, 0.5)))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


#: ``replay_receipt`` (app/messaging/jobs.py): a receipt that came before the send's own event, tried again
#: after each of these delays (seconds), then dropped (logged)
RECEIPT_REPLAY_DELAYS = (2, 10, 60, 300)
RECEIPT_REPLAY_OPTIONS: dict[str, Any] = {"timeout": 60, "retries": 3, "retry_delay": 1.0}


#: ``deliver_webhook`` (app/webhooks/jobs.py): one attempt; the schedule of retries is the delivery's own
#: (app/webhooks/delivery.py), so SAQ never retries it (a POST of 10 s at most, room around it)
WEBHOOK_DELIVERY_OPTIONS: dict[str, Any] = {"timeout": 30, "retries": 1}
#: how often the webhook dispatcher runs (seconds): "immediately" is within this
WEBHOOK_DISPATCH_SECONDS = 1


def send_job_key(attempt_id: object) -> str:
    """The key of an attempt's ``send_message`` job: one job per attempt, found again by the sweep."""
    return f"send:{attempt_id}"


def send_job_options(send_timeout: float, heartbeat: int) -> dict[str, Any]:
    """``send_message`` (app/messaging/jobs.py): the plugin gets ``send_timeout``, the job room around it
    (its database reads, which wait up to 10 s for a database being restarted).

    retries=1: one run. A run that dies (killed worker) is not retried blindly on the same service; the
    sweep records it as a failed attempt and the chain moves on."""
    return {"timeout": int(send_timeout) + 30, "heartbeat": heartbeat, "retries": 1}


#: attempts one ``send_batch`` job carries (one organization, one service)
SEND_BATCH = 250


def batch_job_key(batch_id: object) -> str:
    """The key of a ``send_batch`` job, recorded on each of its attempts (``Attempt.job_key``): the sweep
    finds the job of a stale attempt by it."""
    return f"batch:{batch_id}"


def batch_job_options(send_timeout: float, heartbeat: int, size: int) -> dict[str, Any]:
    """``send_batch``: as :func:`send_job_options` (one run), with room for ``size`` plugin calls made a few at
    a time (:data:`app.messaging.batches.SEND_CONCURRENCY`) and the heartbeat proving the worker alive."""
    return {"timeout": int(send_timeout * max(1, size // 10)) + 30, "heartbeat": heartbeat, "retries": 1}


class JobContext(Context):
    """What every job finds in ``ctx`` (set by the workers' start-up, app/worker/runner.py); a domain
    that needs more extends it (``MessagingContext`` in app/messaging/jobs.py)."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    queues: dict[str, Queue]


#: seconds a job must sit, not yet active, in the active list before the sweep takes it for an orphan
ORPHAN_AFTER = 5.0


class RedisQueue(saq.queue.redis.RedisQueue):
    """SAQ's Redis queue, whose sweep does not abort a job a live worker has just dequeued.

    SAQ's sweep aborts every job of the active list that is not ``active``: the job of a worker that
    died between its dequeue and its start, but also, now and then, one that a live worker is about to
    start (the dequeue and the status update are two round trips). That one runs all the same and is
    marked aborted, or cancelled by its own worker a second later: a send job's attempt then reads as
    lost, and the chain may send again (docs/decisions/0004, 0036). Here a job not yet active is taken
    for an orphan only once it has been seen so for :data:`ORPHAN_AFTER`; stuck active jobs (timeout,
    heartbeat) are swept at once, as by SAQ. The rest is SAQ's ``RedisQueue.sweep`` (saq 0.26).

    One sweep per :attr:`sweep_lock` seconds across every worker, not SAQ's 60 (its workers call
    ``sweep()`` with the default): SAQ's lock, taken by the last sweep of a worker that then died, kept
    every other worker from sweeping its stuck jobs for up to a minute, however short the heartbeat —
    a blast batch of a killed worker waited ~60 s before it was taken for lost and went on. Nor does it
    wait, as SAQ does, ``abort`` seconds per job for a dead worker to stop it: five sends of a killed
    worker took 25 s to be swept."""

    def __init__(self, *args: Any, sweep_lock: int = 60, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: seconds between two sweeps of this queue by any worker (:func:`make_queue`: the sweep interval)
        self.sweep_lock = sweep_lock
        self._not_active_since: dict[bytes, float] = {}

    async def sweep(self, lock: int | None = None, abort: float = 5.0) -> list[str]:
        if not self._cleanup_script:
            self._cleanup_script = self.redis.register_script(_SWEEP_SCRIPT)
        lock = self.sweep_lock if lock is None else lock
        id_jobs = await self._cleanup_script(keys=[self._sweep, self._active], args=[lock], client=self.redis)
        if not id_jobs:  # another worker holds the sweep's lock (or nothing is active)
            return []
        now = time.monotonic()
        seen, self._not_active_since = self._not_active_since, {}
        swept = []
        for job_id, job_bytes in id_jobs:
            job = self.deserialize(job_bytes)
            if job is None:
                swept.append(job_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                continue
            if job.status == Status.ACTIVE and not job.stuck:
                continue
            if not job.stuck:  # not active yet: being started, or an orphan
                since = self._not_active_since[job_id] = seen.get(job_id, now)
                if now - since < ORPHAN_AFTER:
                    continue
            swept.append(job_id)
            # SAQ waits ``abort`` seconds for the job's worker to stop it, one job after another; a worker
            # that missed its heartbeat (or never started the job) is dead: nobody will, so no wait
            dead = not job.stuck or (job.heartbeat and seconds(now_ms() - job.touched) > job.heartbeat)
            await self.abort(job, error=self.swept_error_message)
            with contextlib.suppress(TimeoutError):
                await job.refresh(None if dead else abort)
            if job.retryable:
                await self.retry(job, error=self.swept_error_message)
            else:
                await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        return [job_id.decode("utf-8") for job_id in swept]


#: SAQ's: the active list's jobs, once per ``lock`` seconds across every worker
_SWEEP_SCRIPT = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""


def make_queue(settings: Settings, name: str = DEFAULT_QUEUE) -> Queue:
    """The queue ``name`` under this deployment's prefix (``VOLUBLE_QUEUE_PREFIX``), swept at most once per
    sweep interval (``VOLUBLE_SWEEP_SECONDS``) by all workers together."""
    return RedisQueue.from_url(
        settings.redis.url,
        name=f"{settings.redis.queue_prefix}-{name}",
        sweep_lock=max(1, settings.worker.sweep_seconds),
    )


def make_queues(settings: Settings) -> dict[str, Queue]:
    return {name: make_queue(settings, name) for name in QUEUE_NAMES}
