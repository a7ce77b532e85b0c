"""SAQ queues on Redis. Redis holds queues only; the database stays the source of truth."""

from __future__ import annotations

from saq import Queue

from app.config import Settings

DEFAULT_QUEUE = "voluble-default"


def make_queue(settings: Settings, name: str = DEFAULT_QUEUE) -> Queue:
    return Queue.from_url(settings.redis.url, name=name)
