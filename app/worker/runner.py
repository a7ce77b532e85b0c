"""Starting SAQ workers: the context every job receives (settings, database sessions)."""

from __future__ import annotations

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
        functions=FUNCTIONS,
        concurrency=settings.worker.concurrency,
        startup=startup,
        shutdown=shutdown,
        shutdown_grace_period_s=10,
    )


async def run_workers(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM (SAQ installs the handlers); in-flight jobs get a grace period."""
    worker = make_worker(settings)
    log.info("worker starting", queue=worker.queue.name, concurrency=worker.concurrency)
    await worker.start()
    log.info("worker stopped")
