"""Worker processes: one SAQ worker per queue in each process, sharing the job context.

Every process serves the ``send`` queue (single messages) beside the ``blast`` queue (blast traffic, in
batches), each with its own concurrency: a blast's jobs never stand in front of a single message's."""

from __future__ import annotations

import asyncio
import math
import signal
from typing import Any

from saq import CronJob, Worker
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import app.audit  # noqa: F401  (the audit listener: what jobs change is recorded, by the system)
from app import metrics
from app.blasts import fanout as blast_fanout
from app.blasts import jobs as blast_jobs
from app.config import Settings
from app.db.config import make_sqlalchemy_config
from app.logging import get_logger
from app.messaging import jobs as messaging_jobs
from app.messaging.coordinator import Coordinator
from app.messaging.jobs import MessagingContext
from app.messaging.preparing import CredentialsMemo
from app.queues import BLAST_QUEUE, DEFAULT_QUEUE, EVENTS_QUEUE, SEND_QUEUE, WEBHOOKS_QUEUE, make_queues
from app.servicehost.jobs import CRON_JOBS as PLUGIN_CRON_JOBS
from app.servicehost.jobs import recheck_plugins
from app.servicehost.ratelimit import SendLimiter
from app.servicehost.registry import PluginRegistry, load_registry
from app.tenants.jobs import FUNCTIONS as ACCOUNT_FUNCTIONS
from app.webhooks import jobs as webhook_jobs

log = get_logger(__name__)


class WorkerContext(MessagingContext):
    """The context of every job in a worker process: each job's own context type is a part of it."""


class QueueWorker(Worker[WorkerContext]):
    """A SAQ worker that leaves signal handling to :func:`run_workers` (several share one process).

    Its upkeep loops (SAQ's :meth:`Worker.upkeep`: abort, schedule, sweep, worker info) notice a stop
    only after their next sleep; :meth:`stop` ends them first, so that the shutdown grace period is
    spent on the jobs in flight alone and an idle worker stops at once."""

    SIGNALS: list[signal.Signals] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._upkeep: list[asyncio.Task[None]] = []

    async def upkeep(self) -> list[asyncio.Task[None]]:
        self._upkeep = await super().upkeep()
        return self._upkeep

    async def stop(self) -> None:
        for task in self._upkeep:
            task.cancel()
        await super().stop()


def make_workers(settings: Settings, engine: AsyncEngine) -> list[QueueWorker]:
    queues = make_queues(settings)
    built: list[tuple[async_sessionmaker[AsyncSession], PluginRegistry, Coordinator, SendLimiter, CredentialsMemo]] = []
    lock = asyncio.Lock()

    async def startup(ctx: WorkerContext) -> None:
        async with lock:  # the workers of a process share one registry, session maker and coordinator
            if not built:
                registry = load_registry(settings)
                await registry.check()
                coordinator = Coordinator(
                    settings=settings,
                    registry=registry,
                    queues=queues,
                    send_timeout=settings.worker.send_timeout,
                    heartbeat=settings.worker.heartbeat_seconds,
                    stopped_blasts=blast_fanout.stopped,
                )
                sessions = async_sessionmaker(engine, expire_on_commit=False)
                limiter = SendLimiter.from_url(
                    settings.redis.url, prefix=settings.redis.queue_prefix, registry=registry, sessions=sessions
                )
                built.append((sessions, registry, coordinator, limiter, CredentialsMemo()))
        sessions, registry, coordinator, limiter, credentials = built[0]
        ctx["settings"] = settings
        ctx["sessions"] = sessions
        ctx["queues"] = queues
        ctx["registry"] = registry
        ctx["coordinator"] = coordinator
        ctx["limiter"] = limiter
        ctx["credentials"] = credentials

    async def shutdown(ctx: WorkerContext) -> None:
        if built:  # its connections close; one still in use by another worker reconnects
            await built[0][3].close()

    every = max(settings.worker.sweep_seconds, 1)
    common: dict[str, Any] = {
        "startup": startup,
        "shutdown": shutdown,
        # On SIGTERM the jobs in flight get the grace period; idle workers stop at once. A job still
        # running then is cancelled and SAQ puts it back on its queue (docs/decisions/0036).
        "shutdown_grace_period_s": math.ceil(settings.worker.shutdown_grace),
        "dequeue_timeout": 1.0,
        "timers": {"sweep": every},
    }
    concurrency = settings.worker.concurrency
    return [
        QueueWorker(
            queues[DEFAULT_QUEUE],
            functions=[
                *ACCOUNT_FUNCTIONS,
                messaging_jobs.sweep,
                messaging_jobs.roll_up_stats,
                recheck_plugins,
                *blast_jobs.FUNCTIONS,
            ],
            cron_jobs=[
                CronJob(messaging_jobs.sweep, cron=f"* * * * * */{every}", timeout=300, retries=1),
                *PLUGIN_CRON_JOBS,
                CronJob(blast_jobs.blast_tick, cron=f"* * * * * */{every}", unique=False, timeout=60, retries=1),
                # the dashboard's counts of the closed days (the first run over a long history takes seconds)
                CronJob(messaging_jobs.roll_up_stats, cron="* * * * *", timeout=600, retries=1),
            ],
            concurrency=concurrency,
            **common,
        ),
        QueueWorker(
            queues[SEND_QUEUE],
            functions=[messaging_jobs.send_message],
            # a send that gave its turn under the service's rate back comes again later (same key)
            after_process=messaging_jobs.requeue_deferred,
            concurrency=concurrency,
            **common,
        ),
        # a send_batch job makes SEND_CONCURRENCY plugin calls at once: fewer jobs at a time than on ``send``
        QueueWorker(
            queues[BLAST_QUEUE],
            functions=[messaging_jobs.send_batch],
            # a batch that could not have its turns under the service's rate soon goes on later (same key)
            after_process=messaging_jobs.requeue_deferred,
            concurrency=max(2, concurrency // 2),
            **common,
        ),
        QueueWorker(
            queues[EVENTS_QUEUE],
            functions=[
                messaging_jobs.message_sent,
                messaging_jobs.attempt_failed,
                messaging_jobs.replay_receipt,
                messaging_jobs.apply_outcomes,
            ],
            concurrency=concurrency,
            **common,
        ),
        QueueWorker(
            queues[WEBHOOKS_QUEUE],
            functions=webhook_jobs.FUNCTIONS,
            cron_jobs=webhook_jobs.CRON_JOBS,
            concurrency=concurrency,
            **common,
        ),
    ]


async def run_workers(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then stop taking jobs, give those in flight the grace period and exit.

    A second signal changes nothing: the orchestrator's own deadline (SIGKILL) is the hard stop, and
    what a SIGKILL interrupts the sweep recovers."""
    engine = make_sqlalchemy_config(settings).get_engine()
    workers = make_workers(settings, engine)
    log.info("workers starting", queues=[w.queue.name for w in workers], concurrency=settings.worker.concurrency)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    tasks = [asyncio.create_task(w.start()) for w in workers]
    await stopping.wait()
    log.info("workers stopping", grace_seconds=settings.worker.shutdown_grace)
    await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    await engine.dispose()
    metrics.process_exited()
    log.info("workers stopped")
