"""SAQ queues on Redis. Redis holds queues only; the database stays the source of truth."""

from __future__ import annotations

from saq import Queue

from app.config import Settings

DEFAULT_QUEUE = "default"


def make_queue(settings: Settings, name: str = DEFAULT_QUEUE) -> Queue:
    """The queue ``name`` under this deployment's prefix (``VOLUBLE_QUEUE_PREFIX``)."""
    return Queue.from_url(settings.redis.url, name=f"{settings.redis.queue_prefix}-{name}")
