"""SAQ jobs of the webhooks: the dispatcher (cron, every second) and one delivery attempt per job."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from saq import CronJob, Queue
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import utcnow
from app.logging import get_logger
from app.queues import WEBHOOK_DELIVERY_OPTIONS, WEBHOOK_DISPATCH_SECONDS, WEBHOOKS_QUEUE, JobContext
from app.webhooks import delivery
from app.webhooks.services import WebhookSecrets

log = get_logger(__name__)


def delivery_job_key(delivery_id: UUID, due_at: datetime) -> str:
    """One job per (delivery, due time): the dispatcher's repeated finds of a queued one are deduplicated,
    a retry or a replay (a new due time) is a new job."""
    return f"webhook:{delivery_id}:{due_at.timestamp():.3f}"


async def dispatch(sessions: async_sessionmaker[AsyncSession], queue: Queue, now: datetime | None = None) -> int:
    """Fan out the outbox, then enqueue every due delivery; the jobs enqueued. If Redis is down this
    raises after the fan-out is committed: the deliveries stay due and the next run enqueues them."""
    now = now or utcnow()
    async with sessions() as session:
        while await delivery.fan_out(session, now) == delivery.BATCH:
            pass
        pending = await delivery.due(session, now)
    for delivery_id, due_at in pending:
        await queue.enqueue(
            "deliver_webhook",
            delivery_id=str(delivery_id),
            key=delivery_job_key(delivery_id, due_at),
            **WEBHOOK_DELIVERY_OPTIONS,
        )
    return len(pending)


async def dispatch_webhooks(ctx: JobContext) -> int:
    return await dispatch(ctx["sessions"], ctx["queues"][WEBHOOKS_QUEUE])


async def deliver_webhook(ctx: JobContext, *, delivery_id: str) -> str | None:
    settings = ctx["settings"]
    async with ctx["sessions"]() as session:
        status = await delivery.attempt(
            session,
            WebhookSecrets(settings),
            UUID(delivery_id),
            allow_private=settings.security.allow_private_targets,
        )
    return status.value if status else None


FUNCTIONS = [dispatch_webhooks, deliver_webhook]
CRON_JOBS = [
    CronJob(dispatch_webhooks, cron=f"* * * * * */{WEBHOOK_DISPATCH_SECONDS}", timeout=60, retries=1),
]
