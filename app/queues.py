"""SAQ queues on Redis, the enqueue options of every job, and the job context: the one module that the
domains (which enqueue) and ``app.worker`` (which runs) both import. Redis holds queues only; the database
stays the source of truth.

- ``default``: system jobs (mails, plugin re-checks, the sweep);
- ``send``: one job per attempt: a worker calls a plugin and reports the outcome as an event;
- ``events``: the coordinator applies outcomes (state machine, fallback, credits);
- ``webhooks``: the webhook dispatcher and one job per delivery attempt (a slow receiver delays no send).
"""

from __future__ import annotations

import contextlib
from typing import Any

from saq import Queue, Status
from saq.queue.redis import RedisQueue
from saq.types import Context
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings

DEFAULT_QUEUE = "default"
SEND_QUEUE = "send"
EVENTS_QUEUE = "events"
WEBHOOKS_QUEUE = "webhooks"
QUEUE_NAMES = (DEFAULT_QUEUE, SEND_QUEUE, EVENTS_QUEUE, WEBHOOKS_QUEUE)

# Enqueue options of each job: SAQ's ``retries`` counts total attempts.

#: ``send_password_reset`` (app/tenants/jobs.py), enqueued by app/tenants/flows.py
PASSWORD_RESET_OPTIONS: dict[str, Any] = {"timeout": 60, "retries": 5, "retry_delay": 2.0, "retry_backoff": True}
#: ``message_sent`` / ``attempt_failed`` (app/messaging/jobs.py), enqueued by the send job
EVENT_JOB_OPTIONS: dict[str, Any] = {"timeout": 60, "retries": 5, "retry_delay": 1.0, "retry_backoff": True}


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
    """``send_message`` (app/messaging/jobs.py): the plugin gets ``send_timeout``, the job room around it.

    retries=1: one run. A run that dies (killed worker) is not retried blindly on the same service; the
    sweep records it as a failed attempt and the chain moves on."""
    return {"timeout": int(send_timeout) + 15, "heartbeat": heartbeat, "retries": 1}


class JobContext(Context):
    """What every job finds in ``ctx`` (set by the workers' start-up, app/worker/runner.py); a domain
    that needs more extends it (``MessagingContext`` in app/messaging/jobs.py)."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    queues: dict[str, Queue]


# SAQ's sweep, as in saq/queue/redis.py (0.26): the active list and each job's record, read at once
_SWEEP = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""


class SweepSafeQueue(RedisQueue):
    """SAQ's Redis queue, with a sweep that spares a job caught between its dequeue and its start.

    SAQ moves a job into the active list (``BLMOVE``), then reads it and stores it ``ACTIVE``; its sweep
    aborts every job of the active list not stored ``ACTIVE``, so a sweep in that instant kills a healthy
    job (seen under load: a send failed ``worker_lost: … aborted (swept)`` a second after it started).
    Here a job of the active list still stored ``QUEUED`` is swept only when a later sweep of this process
    finds it so again (its worker died in that instant); everything else is swept as SAQ does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._starting: set[bytes] = set()

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        if not self._cleanup_script:
            self._cleanup_script = self.redis.register_script(_SWEEP)
        id_jobs = await self._cleanup_script(keys=[self._sweep, self._active], args=[lock], client=self.redis)
        swept: list[bytes] = []
        starting: set[bytes] = set()
        for job_id, job_bytes in id_jobs:
            job = self.deserialize(job_bytes)
            if job is None:  # its record is gone
                swept.append(job_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                continue
            if job.status == Status.QUEUED and job_id not in self._starting:
                starting.add(job_id)  # just dequeued, most likely: look again next time
                continue
            if job.status != Status.ACTIVE or job.stuck:
                swept.append(job_id)
                await self.abort(job, error=self.swept_error_message)
                with contextlib.suppress(TimeoutError):
                    await job.refresh(abort)
                if job.retryable:
                    await self.retry(job, error=self.swept_error_message)
                else:
                    await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        if id_jobs:  # a sweep that ran (this process held the lock): what it saw starting
            self._starting = starting
        return [job_id.decode("utf-8") for job_id in swept]


def make_queue(settings: Settings, name: str = DEFAULT_QUEUE) -> Queue:
    """The queue ``name`` under this deployment's prefix (``VOLUBLE_QUEUE_PREFIX``)."""
    url, full_name = settings.redis.url, f"{settings.redis.queue_prefix}-{name}"
    if url.startswith(("redis://", "rediss://", "unix://")):
        return SweepSafeQueue.from_url(url, name=full_name)
    return Queue.from_url(url, name=full_name)


def make_queues(settings: Settings) -> dict[str, Queue]:
    return {name: make_queue(settings, name) for name in QUEUE_NAMES}
