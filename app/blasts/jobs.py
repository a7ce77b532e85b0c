"""SAQ jobs of blasts, on the ``default`` queue.

``blast_step`` runs one step of a blast's fan-out (:func:`app.blasts.fanout.step`) and enqueues the
next one. ``blast_tick`` (cron, beside the messaging sweep) starts scheduled blasts when due and
restarts the chain of steps of a blast whose worker died (the step's claim makes a duplicate harmless).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

from saq import Queue
from sqlalchemy import select, update

from app.blasts import fanout
from app.blasts.models import Blast, BlastState
from app.clock import utcnow
from app.db.config import write_transaction
from app.logging import get_logger
from app.queues import DEFAULT_QUEUE

log = get_logger(__name__)

#: one run; a step lost with its worker is restarted by blast_tick
STEP_OPTIONS: dict[str, Any] = {"timeout": 600, "retries": 1}


async def enqueue_step(queue: Queue, blast_id: UUID | str, generation: int, delay: float = 0.0) -> None:
    try:
        await queue.enqueue(
            "blast_step",
            blast_id=str(blast_id),
            generation=generation,
            scheduled=int(time.time() + delay) if delay else 0,
            **STEP_OPTIONS,
        )
    except Exception as exc:  # Redis away: blast_tick restarts the blast
        log.warning("blast step not enqueued; the tick will retry", blast_id=str(blast_id), error=repr(exc))


async def blast_step(ctx: dict[str, Any], *, blast_id: str, generation: int) -> None:
    delay = await fanout.step(ctx["sessions"], ctx["coordinator"], UUID(blast_id), generation)
    if delay is not None:
        if 0 < delay < 1:  # SAQ schedules by the second: a short wait is cheaper here
            await asyncio.sleep(delay)
            delay = 0.0
        await enqueue_step(ctx["queues"][DEFAULT_QUEUE], blast_id, generation + 1, delay)


async def blast_tick(ctx: dict[str, Any]) -> dict[str, int]:
    """Start the scheduled blasts that are due; restart the fan-out of those whose steps stopped."""
    now = utcnow()
    stale = now - timedelta(seconds=ctx["settings"].worker.stale_seconds)
    async with ctx["sessions"]() as session:
        async with write_transaction(session):
            due = list(
                await session.execute(
                    update(Blast)
                    .where(Blast.state == BlastState.SCHEDULED, Blast.send_at <= now)
                    .values(state=BlastState.FANNING_OUT, started_at=now, updated_at=now)
                    .returning(Blast.id, Blast.generation)
                    .execution_options(synchronize_session=False)
                )
            )
        stopped = list(
            await session.execute(
                select(Blast.id, Blast.generation).where(
                    Blast.state.in_((BlastState.FANNING_OUT, BlastState.SENDING)), Blast.updated_at < stale
                )
            )
        )
    queue = ctx["queues"][DEFAULT_QUEUE]
    for blast_id, generation in [*due, *stopped]:
        await enqueue_step(queue, blast_id, generation)
    counts = {"started": len(due), "restarted": len(stopped)}
    if any(counts.values()):
        log.info("blast tick", **counts)
    return counts


FUNCTIONS: list[Any] = [blast_step, blast_tick]
