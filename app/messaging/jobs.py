"""SAQ jobs of the pipeline.

``send_message`` runs on the ``send`` queue: it waits for the service's turn (its rate, shared by every
worker in Redis: app/servicehost/ratelimit.py), calls the plugin naively and reports what happened as an
event; it never decides fallback and never writes message state. A turn further away than
``VOLUBLE_RATE_MAX_WAIT`` re-schedules the job to it (``requeue_deferred``) instead of holding a worker.
``message_sent`` and ``attempt_failed`` run on the ``events`` queue: the coordinator applies them.
Blast traffic does the same in batches: ``send_batch`` (``blast`` queue) sends the attempts of one
organization and service (each send taking its turn) and reports them in one ``apply_outcomes`` event
(app/messaging/bulk.py). ``sweep`` is a cron job
that finds work the queues lost (a killed worker, a restarted Redis) and puts it back; ``roll_up_stats``
one that keeps the dashboard's counts of the closed days (:mod:`app.messaging.rollup`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from saq import Job, Status
from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.clock import utcnow
from app.db.config import database_message, is_connection_error
from app.logging import get_logger
from app.messaging import bulk, preparing, rollup
from app.messaging.coordinator import Coordinator
from app.messaging.models import Attempt, AttemptOutcome, Message, MessageState
from app.messaging.receipts import apply_receipt, receipt_of, replay_later
from app.plugins.base import PluginError
from app.queues import (
    BLAST_QUEUE,
    EVENTS_QUEUE,
    SEND_QUEUE,
    JobContext,
    beating,
    event_job_options,
    send_job_key,
)
from app.servicehost.ratelimit import SCHEDULE_AHEAD, SCHEDULE_SLACK, SendLimiter, Turn, lane_width
from app.servicehost.registry import PluginRegistry

log = get_logger(__name__)
T = TypeVar("T")

#: plugin calls of one ``send_batch`` job made at once
SEND_CONCURRENCY = 10
#: how long a send job waits for an unreachable database before the plugin call (see send_job_options)
DATABASE_WAIT_SECONDS = 10.0


class MessagingContext(JobContext):
    """The context of the pipeline's jobs: the process's plugins and its coordinator besides the rest."""

    registry: PluginRegistry
    coordinator: Coordinator
    #: the send rates of every (service, organization), shared with the other workers in Redis
    limiter: SendLimiter
    #: the organizations' credentials, decrypted once (:class:`preparing.CredentialsMemo`)
    credentials: preparing.CredentialsMemo


#: a send job still queued or running after this long is given up as lost
LOST_AFTER = timedelta(minutes=15)


Event = bulk.Event
Send = preparing.Send
#: the plugin calls ready, and the events of the attempts that cannot be sent
Prepared = tuple[list[Send], dict[UUID, Event]]


async def _call(send: Send, seconds: float) -> Event:
    """Call the plugin once; what happened, as an event."""
    try:
        sending = send.plugin.send(send.outgoing, send.address, send.credentials)
        with metrics.send_timer(send.service):
            provider_id = await asyncio.wait_for(sending, seconds)
    except PluginError as exc:
        return {"outcome": "failed", "reason": str(exc) or type(exc).__name__}
    except TimeoutError:
        return {"outcome": "failed", "reason": f"timeout: no answer within {seconds:g}s"}
    except Exception as exc:
        log.warning("plugin raised", service=send.service, error=repr(exc))
        return {"outcome": "failed", "reason": f"plugin error: {type(exc).__name__}: {exc}"[:1000]}
    if not isinstance(provider_id, str) or not provider_id.strip() or len(provider_id) > 255:
        return {"outcome": "failed", "reason": "plugin returned no usable provider message id"}
    return {"outcome": "sent", "provider_message_id": provider_id.strip()}


async def before_send(ctx: MessagingContext, send: Send, until: float) -> Turn:
    """Right before each plugin call of a ``send_batch`` job: its turn in the lane of blast traffic under the
    service's rate (shared by every worker in Redis, behind single messages), slept for; not ``reserved``
    when it could not be had by ``until`` (epoch seconds). The batch's heartbeat keeps beating meanwhile."""
    return await ctx["limiter"].blast_turn(send.service, send.outgoing.organization_id, until)


async def _when_reachable(read: Callable[[], Awaitable[T]], attempts: int) -> T:
    """``read()`` (the database reads before the plugin calls), waiting out a database that is away
    (restarted, failing over) for up to :data:`DATABASE_WAIT_SECONDS`: nothing has been sent yet, so
    reading again is safe. Past that, the error ends the job and the sweep records the attempts as lost
    (the chain moves on)."""
    deadline = time.monotonic() + DATABASE_WAIT_SECONDS
    delay = 0.25
    while True:
        try:
            return await read()
        except Exception as exc:
            if not is_connection_error(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable; the send waits", attempts=attempts, error=database_message(exc))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def _prepare(ctx: MessagingContext, session: AsyncSession, attempt_ids: list[UUID]) -> Prepared:
    """:func:`preparing.prepare` with this process's plugins and credentials memo."""
    return await preparing.prepare(
        session, attempt_ids, settings=ctx["settings"], registry=ctx["registry"], memo=ctx["credentials"]
    )


async def _prepare_when_reachable(ctx: MessagingContext, attempt_ids: list[UUID]) -> Prepared:
    """:func:`_prepare` in a session of its own, through :func:`_when_reachable`."""

    async def read() -> Prepared:
        async with ctx["sessions"]() as session:
            return await _prepare(ctx, session, attempt_ids)

    return await _when_reachable(read, len(attempt_ids))


async def _attempt_send(ctx: MessagingContext, attempt_id: UUID, turn_at: float | None) -> Event | None:
    """Call the plugin for a pending attempt; the event to report, or None if there is nothing to do."""
    sends, events = await _prepare_when_reachable(ctx, [attempt_id])
    if attempt_id in events:
        return events[attempt_id]
    if not sends:
        return None
    send = sends[0]
    # the service's turn, right before its call (so that the work above does not delay the send past it)
    turn_at = await ctx["limiter"].turn(send.service, send.outgoing.organization_id, turn_at)
    if (wait := turn_at - time.time()) > max(ctx["settings"].worker.rate_max_wait, SCHEDULE_SLACK):
        return {"outcome": "deferred", "turn_at": turn_at}  # far: come back then rather than hold a worker
    if wait > 0:  # the heartbeat keeps beating meanwhile
        await asyncio.sleep(wait)
    return await _call(send, ctx["settings"].worker.send_timeout)


async def report(ctx: MessagingContext, attempt_id: str, event: dict[str, Any]) -> None:
    queue = ctx["queues"][EVENTS_QUEUE]
    if event["outcome"] == "deferred":  # not an outcome: the job comes back (requeue_deferred)
        return
    if event["outcome"] == "sent":
        await queue.enqueue(
            "message_sent",
            attempt_id=attempt_id,
            provider_message_id=event["provider_message_id"],
            key=f"event:{attempt_id}",
            **event_job_options(ctx["coordinator"].heartbeat),
        )
    else:
        await queue.enqueue(
            "attempt_failed",
            attempt_id=attempt_id,
            reason=event["reason"],
            key=f"event:{attempt_id}",
            **event_job_options(ctx["coordinator"].heartbeat),
        )


async def send_message(
    ctx: MessagingContext, *, attempt_id: str, turn_at: float | None = None
) -> dict[str, Any] | None:
    """``turn_at``: the moment of the turn under the service's rate this job holds (re-scheduled to it)."""
    async with beating(ctx.get("job")):  # finished (or re-enqueued, if it deferred itself) once it stopped
        event = await _attempt_send(ctx, UUID(attempt_id), turn_at)
    if event is not None and not await bulk.record_sent(ctx["coordinator"], ctx["sessions"], attempt_id, event):
        try:
            await report(ctx, attempt_id, event)
        except Exception as exc:  # the send happened: never fail the job (a failed send job is a lost worker)
            # the job ends complete with the event as its result, and the sweep replays it
            log.warning("event not queued; the sweep will replay it", attempt_id=attempt_id, error=repr(exc))
    return event


def is_deferred(result: Any) -> bool:
    """Whether a send job's result says it gave its rate-limited turn back, to come again later."""
    return isinstance(result, dict) and result.get("outcome") == "deferred"


async def requeue_deferred(ctx: MessagingContext) -> None:
    """SAQ's ``after_process`` of the send and blast workers: a job that deferred itself is enqueued again
    under the same key (:func:`again`). If this process dies before that, the sweep re-enqueues it."""
    job = ctx.get("job")
    if job is None or job.status != Status.COMPLETE or not is_deferred(job.result):
        return
    try:
        await job.get_queue().enqueue(again(job))
    except Exception as exc:
        log.warning("deferred send not re-enqueued; the sweep will", job=job.key, error=repr(exc))


def again(job: Job) -> Job:
    """The job that follows one that deferred itself, same key, scheduled a couple of seconds before its
    ``turn_at`` (SAQ schedules by the second). A ``send_message`` job gave its rate-limited turn back
    (further than ``rate_max_wait``) and holds it: it defers at most once (unless it comes back late). A
    ``send_batch`` job could not have its lane's next turn soon enough (or before its own timeout): it
    goes on with the attempts it did not send, carrying the outcomes so far (``earlier``: the sweep can
    report them again whatever becomes of the job) and its ``deferrals`` (in the key of its outcomes' event)."""
    result = job.result
    turn_at = float(result["turn_at"])
    kwargs = dict(job.kwargs or {})
    if "remaining" in result:
        kwargs.update(
            attempt_ids=result["remaining"], earlier=result["outcomes"], deferrals=kwargs.get("deferrals", 0) + 1
        )
    else:
        kwargs["turn_at"] = turn_at
    return Job(
        function=job.function,
        kwargs=kwargs,
        key=job.key,
        timeout=job.timeout,
        heartbeat=job.heartbeat,
        retries=job.retries,
        ttl=job.ttl,
        scheduled=max(int(turn_at) - SCHEDULE_AHEAD, int(time.time()) + 1),
    )


def _since(job: Job, started_at: datetime) -> datetime:
    """Since when a queued or running send job has been waiting: a running one since it started, a queued
    one since it was (re-)queued or scheduled for (a job re-scheduled to its turn under the service's rate)."""
    ms = job.started if job.status == Status.ACTIVE else max(job.queued, job.scheduled * 1000)
    return max(started_at, datetime.fromtimestamp(ms / 1000, UTC)) if ms else started_at


async def send_batch(
    ctx: MessagingContext, *, attempt_ids: list[str], earlier: list[Event] | None = None, deferrals: int = 0
) -> list[Event] | dict[str, Any]:
    """Blast traffic: the pending attempts of one batch (one organization, one service), sent a few at a time
    (:data:`SEND_CONCURRENCY`, fewer under a slow rate: :func:`lane_width`), their outcomes reported in one
    ``apply_outcomes`` event. The outcomes are also the job's result: the sweep reports them again if that
    event got lost. The plugins of a cancelled blast are not called: each attempt is reported failed
    ``cancelled``.

    Under a service's rate each send takes its turn in the lane of blast traffic (:func:`before_send`). A
    turn that does not come within ``rate_max_wait``, or before the job's own timeout nears, ends the
    batch early: it reports what it sent and defers the rest (``requeue_deferred``: the same key, scheduled
    for when the lane frees, ``earlier`` carrying the outcomes so far, ``deferrals`` counting them),
    so that a slow rate holds no worker and outlasts no timeout."""
    job = ctx.get("job")
    coordinator = ctx["coordinator"]
    settings = ctx["settings"].worker
    # no send starts after this: the ones in flight end and the outcomes are reported within the timeout
    stop_by = time.time() + (job.timeout if job is not None and job.timeout else 86400) - settings.send_timeout - 20
    free_at: list[float] = []  # when the lane frees, once a send could not have its turn
    async with beating(job):
        ids = [UUID(a) for a in attempt_ids]

        async def read() -> tuple[list[Send], dict[UUID, Event], set[UUID]]:
            async with ctx["sessions"]() as session:
                sends, events = await _prepare(ctx, session, ids)
                blasts = {s.blast_id for s in sends if s.blast_id is not None}
                return sends, events, await coordinator.stopped(session, blasts)

        sends, events, stopped = await _when_reachable(read, len(ids))
        for send in sends:
            if send.blast_id in stopped:  # apply_outcomes fails the message "cancelled" (Coordinator.plan)
                events[send.attempt_id] = {"outcome": "failed", "reason": "cancelled"}
        sends = [s for s in sends if s.attempt_id not in events]
        rate = await ctx["limiter"].rate(sends[0].service, sends[0].outgoing.organization_id) if sends else None
        gate = asyncio.Semaphore(lane_width(rate, settings.rate_max_wait, SEND_CONCURRENCY))

        async def one(send: Send) -> None:
            async with gate:
                if free_at:  # the batch is deferred: no more sends
                    return
                turn = await before_send(ctx, send, min(stop_by, time.time() + settings.rate_max_wait))
                if not turn.reserved:
                    free_at.append(time.time() + turn.wait)
                    return
                events[send.attempt_id] = await _call(send, settings.send_timeout)

        await asyncio.gather(*(one(s) for s in sends))
    outcomes = [{"attempt_id": str(a), **e} for a, e in events.items()]
    key = job.key if job is not None else attempt_ids[0]
    if outcomes:
        await bulk.report_outcomes(coordinator, f"{key}:{deferrals}" if deferrals else key, outcomes)
    done = [*(earlier or []), *outcomes]
    remaining = [str(s.attempt_id) for s in sends if s.attempt_id not in events]
    if remaining:
        log.info("batch deferred for its send rate", job=key, sent=len(outcomes), remaining=len(remaining))
        return {"outcome": "deferred", "turn_at": min(free_at), "outcomes": done, "remaining": remaining}
    return done


async def apply_outcomes(ctx: MessagingContext, *, outcomes: list[Event]) -> None:
    async with beating(ctx.get("job")), ctx["sessions"]() as session:
        await bulk.apply_outcomes(ctx["coordinator"], session, outcomes)


async def message_sent(ctx: MessagingContext, *, attempt_id: str, provider_message_id: str) -> None:
    coordinator = ctx["coordinator"]
    async with beating(ctx.get("job")), ctx["sessions"]() as session:
        await coordinator.on_sent(session, UUID(attempt_id), provider_message_id)


async def attempt_failed(ctx: MessagingContext, *, attempt_id: str, reason: str) -> None:
    coordinator = ctx["coordinator"]
    async with beating(ctx.get("job")), ctx["sessions"]() as session:
        await coordinator.on_failed(session, UUID(attempt_id), reason)


async def replay_receipt(
    ctx: MessagingContext, *, organization_id: str, service: str, receipt: dict[str, Any], tries: int
) -> str:
    """A receipt that arrived before its message had the provider's id, applied again (app/messaging/receipts.py)."""
    parsed = receipt_of(receipt)
    async with ctx["sessions"]() as session:
        outcome = await apply_receipt(session, ctx["coordinator"], UUID(organization_id), service, parsed)
    metrics.receipt_applied(service, outcome)
    if outcome == "unknown":
        await replay_later(ctx["coordinator"], UUID(organization_id), service, parsed, tries)
    return outcome


async def sweep(ctx: MessagingContext) -> dict[str, int]:
    """Recover what the queues lost; dispatch scheduled messages that are due."""
    coordinator = ctx["coordinator"]
    send_queue = ctx["queues"][SEND_QUEUE]
    now = utcnow()
    stale_after = timedelta(seconds=ctx["settings"].worker.stale_seconds)
    counts = {"dispatched": 0, "resumed": 0, "requeued": 0, "replayed": 0, "lost": 0}
    async with ctx["sessions"]() as session:
        due = list(
            await session.scalars(
                select(Message.id)
                .where(
                    Message.state == MessageState.PENDING,
                    or_(
                        Message.send_at.is_not(None) & (Message.send_at <= now),
                        Message.send_at.is_(None) & (Message.updated_at < now - stale_after),
                    ),
                )
                .limit(1000)
            )
        )
        stale = list(
            await session.scalars(
                select(Attempt)
                .where(Attempt.outcome == AttemptOutcome.PENDING, Attempt.started_at < now - stale_after)
                .limit(1000)
            )
        )
        # sending, yet no attempt pending or sent: the dispatch after a failed attempt was lost (the
        # database went away in between); the chain moves on
        stalled = list(
            await session.scalars(
                select(Message.id)
                .where(
                    Message.state == MessageState.SENDING,
                    Message.updated_at < now - stale_after,
                    ~exists().where(
                        Attempt.message_id == Message.id,
                        Attempt.outcome.in_((AttemptOutcome.PENDING, AttemptOutcome.SENT)),
                    ),
                )
                .limit(1000)
            )
        )
    for message_id in due:
        async with ctx["sessions"]() as session:
            await coordinator.dispatch(session, message_id)
        counts["dispatched"] += 1
    for message_id in stalled:
        async with ctx["sessions"]() as session:
            await coordinator.dispatch(session, message_id)
        counts["resumed"] += 1
    batched: dict[str, list[Attempt]] = {}
    for attempt in stale:
        if attempt.job_key is not None:
            batched.setdefault(attempt.job_key, []).append(attempt)
            continue
        job = await send_queue.job(send_job_key(attempt.id))
        # Redis lost it, or the re-enqueue of a job that deferred itself for its rate got lost: send again
        if job is None or (job.status == Status.COMPLETE and is_deferred(job.result)):
            await coordinator.enqueue_send(attempt.id)
            counts["requeued"] += 1
        elif isinstance(job.result, dict) and job.status in (Status.COMPLETE, Status.ABORTED):
            # the send ran to its end and the event got lost (or is still queued: a replay is harmless).
            # ABORTED with a result: SAQ's sweep took the job, between its dequeue and its start, for an
            # orphan and marked it aborted after it completed (docs/decisions/0004): it was sent all the same
            await report(ctx, str(attempt.id), job.result)
            counts["replayed"] += 1
        elif job.status in (Status.FAILED, Status.ABORTED) or (
            job.status in (Status.QUEUED, Status.ACTIVE) and _since(job, attempt.started_at) < now - LOST_AFTER
        ):
            if job.status in (Status.QUEUED, Status.ACTIVE):
                await send_queue.abort(job, "given up by the sweep")
            async with ctx["sessions"]() as session:
                await coordinator.on_failed(
                    session,
                    attempt.id,
                    f"worker_lost: the send job ended {job.status.value} ({job.error or 'no error'})",
                )
            counts["lost"] += 1
    for key, attempts in batched.items():
        await _recover_batch(ctx, key, attempts, now, counts)
    if any(counts.values()):
        log.info("sweep", **counts)
    metrics.sweep_recovered(counts)
    return counts


async def _recover_batch(
    ctx: MessagingContext, key: str, attempts: list[Attempt], now: Any, counts: dict[str, int]
) -> None:
    """The sweep for the stale attempts of one ``send_batch`` job (as for a ``send_message`` job). What the
    job knows it did (its result, and the outcomes a deferred job carries) is reported again first: an
    attempt with an outcome is never sent again nor taken for lost."""
    coordinator = ctx["coordinator"]
    queue = ctx["queues"][BLAST_QUEUE]
    job = await queue.job(key)
    if job is None:  # Redis lost it (or it was never enqueued): the same job again, for what is left
        batch = bulk.Batch(key, attempts[0].organization_id, attempts[0].service, [a.id for a in attempts])
        await bulk.enqueue_batches(coordinator, [batch])
        counts["requeued"] += len(attempts)
        return
    known: list[Event] = list((job.kwargs or {}).get("earlier") or [])
    if isinstance(job.result, list) and job.status in (Status.COMPLETE, Status.ABORTED):
        known = job.result  # it ran to its end (its outcomes include the earlier ones): the event got lost
    elif job.status == Status.COMPLETE and is_deferred(job.result):
        known = job.result["outcomes"]  # its re-enqueue got lost with its process: enqueued again
        await queue.enqueue(again(job))
        counts["requeued"] += len(job.result["remaining"])
    if known:
        await bulk.report_outcomes(coordinator, key, known)
        counts["replayed"] += len(known)
    reported = {o["attempt_id"] for o in known}
    if job.status in (Status.FAILED, Status.ABORTED) or (
        job.status in (Status.QUEUED, Status.ACTIVE)
        and _since(job, min(a.started_at for a in attempts)) < now - LOST_AFTER
    ):
        if job.status in (Status.QUEUED, Status.ACTIVE):
            await queue.abort(job, "given up by the sweep")
        reason = f"worker_lost: the send job ended {job.status.value} ({job.error or 'no error'})"
        lost = [a for a in attempts if str(a.id) not in reported]
        if not lost:
            return
        async with ctx["sessions"]() as session:
            await bulk.apply_outcomes(
                coordinator,
                session,
                [{"attempt_id": str(a.id), "outcome": "failed", "reason": reason} for a in lost],
            )
        counts["lost"] += len(lost)


async def roll_up_stats(ctx: MessagingContext) -> dict[str, int]:
    """Cron (every minute): every organization's rollup brought up to date (decision 0032)."""
    return await rollup.roll_up_all(ctx["sessions"])
