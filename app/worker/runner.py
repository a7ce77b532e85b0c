"""Worker processes: one SAQ worker per queue in each process, sharing the job context."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from saq import CronJob, Worker
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.blasts import jobs as blast_jobs
from app.config import Settings
from app.db.config import make_sqlalchemy_config
from app.logging import get_logger
from app.messaging import jobs as messaging_jobs
from app.messaging.coordinator import Coordinator
from app.plugins.jobs import recheck_plugins
from app.plugins.registry import load_registry
from app.worker.jobs import FUNCTIONS as SYSTEM_FUNCTIONS
from app.worker.queues import DEFAULT_QUEUE, EVENTS_QUEUE, SEND_QUEUE, make_queues

log = get_logger(__name__)


class QueueWorker(Worker):
    """A SAQ worker that leaves signal handling to :func:`run_workers` (several share one process)."""

    SIGNALS: list[signal.Signals] = []


def make_workers(settings: Settings, engine: AsyncEngine) -> list[QueueWorker]:
    queues = make_queues(settings)
    ctx_shared: dict[str, Any] = {}
    lock = asyncio.Lock()

    async def startup(ctx: dict[str, Any]) -> None:
        async with lock:
            if ctx_shared:
                ctx.update(ctx_shared)
                return
            registry = load_registry(settings)
            await registry.check()
            ctx_shared.update(
                settings=settings,
                sessions=async_sessionmaker(engine, expire_on_commit=False),
                queues=queues,
                registry=registry,
                coordinator=Coordinator(
                    settings=settings, registry=registry, queues=queues,
                    send_timeout=settings.worker.send_timeout, heartbeat=settings.worker.heartbeat_seconds,
                ),
            )
            ctx.update(ctx_shared)

    async def shutdown(ctx: dict[str, Any]) -> None:
        return None

    every = max(settings.worker.sweep_seconds, 1)
    common: dict[str, Any] = {
        "startup": startup,
        "shutdown": shutdown,
        # On SIGTERM a job in flight may finish (a plugin gets send_timeout); idle workers stop at once.
        "shutdown_grace_period_s": int(settings.worker.send_timeout) + 5,
        "dequeue_timeout": 1.0,
        "timers": {"sweep": every},
    }
    concurrency = settings.worker.concurrency
    return [
        QueueWorker(
            queues[DEFAULT_QUEUE],
            functions=[*SYSTEM_FUNCTIONS, messaging_jobs.sweep, recheck_plugins, *blast_jobs.FUNCTIONS],
            cron_jobs=[
                CronJob(messaging_jobs.sweep, cron=f"* * * * * */{every}", timeout=300, retries=1),
                CronJob(recheck_plugins, cron="*/5 * * * *", timeout=120, retries=1),
                CronJob(blast_jobs.blast_tick, cron=f"* * * * * */{every}", unique=False, timeout=60, retries=1),
            ],
            concurrency=concurrency,
            **common,
        ),
        QueueWorker(queues[SEND_QUEUE], functions=[messaging_jobs.send_message], concurrency=concurrency, **common),
        QueueWorker(
            queues[EVENTS_QUEUE],
            functions=[messaging_jobs.message_sent, messaging_jobs.attempt_failed],
            concurrency=concurrency,
            **common,
        ),
    ]


async def run_workers(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM; in-flight jobs get a grace period."""
    engine = make_sqlalchemy_config(settings).get_engine()
    workers = make_workers(settings, engine)
    log.info("workers starting", queues=[w.queue.name for w in workers], concurrency=settings.worker.concurrency)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    tasks = [asyncio.create_task(w.start()) for w in workers]
    await stopping.wait()
    log.info("workers stopping")
    for w in workers:  # upkeep loops never end by themselves: cancel them so only jobs get the grace period
        for task in list(w.tasks):
            if task.get_name() != "process":
                task.cancel()
    await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    await engine.dispose()
    log.info("workers stopped")
