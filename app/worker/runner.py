"""Starting SAQ workers: the context every job receives (settings, database sessions)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from saq import Worker
from sqlalchemy.ext.asyncio import async_sessionmaker

from app.config import Settings
from app.db.config import make_sqlalchemy_config
from app.logging import get_logger
from app.worker.jobs import FUNCTIONS
from app.worker.queues import make_queue

log = get_logger(__name__)


def make_worker(settings: Settings) -> Worker:
    db_config = make_sqlalchemy_config(settings)
    engine = db_config.get_engine()

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["settings"] = settings
        ctx["sessions"] = async_sessionmaker(engine, expire_on_commit=False)

    async def shutdown(ctx: dict[str, Any]) -> None:
        await engine.dispose()

    return Worker(
        make_queue(settings),
        functions=FUNCTIONS,  # type: ignore[arg-type]
        concurrency=settings.worker.concurrency,
        startup=startup,
        shutdown=shutdown,
    )


async def run_workers(settings: Settings) -> None:
    worker = make_worker(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(worker.start())
    log.info("worker started", queue=worker.queue.name, concurrency=worker.concurrency)
    await stop.wait()
    log.info("worker stopping")
    await worker.stop()
    task.cancel()
