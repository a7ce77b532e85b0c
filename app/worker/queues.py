"""SAQ queues on Redis. Redis holds queues only; the database stays the source of truth.

- ``default``: system jobs (mails, plugin re-checks, the sweep);
- ``send``: one job per attempt: a worker calls a plugin and reports the outcome as an event;
- ``events``: the coordinator applies outcomes (state machine, fallback, credits).
"""

from __future__ import annotations

from saq import Queue

from app.config import Settings

DEFAULT_QUEUE = "default"
SEND_QUEUE = "send"
EVENTS_QUEUE = "events"
QUEUE_NAMES = (DEFAULT_QUEUE, SEND_QUEUE, EVENTS_QUEUE)


def make_queue(settings: Settings, name: str = DEFAULT_QUEUE) -> Queue:
    """The queue ``name`` under this deployment's prefix (``VOLUBLE_QUEUE_PREFIX``)."""
    return Queue.from_url(settings.redis.url, name=f"{settings.redis.queue_prefix}-{name}")


def make_queues(settings: Settings) -> dict[str, Queue]:
    return {name: make_queue(settings, name) for name in QUEUE_NAMES}
