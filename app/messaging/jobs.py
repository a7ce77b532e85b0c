"""SAQ jobs of the pipeline.

``send_message`` runs on the ``send`` queue: it waits for the service's turn (its rate, shared by every
worker in Redis: app/servicehost/ratelimit.py), calls the plugin naively and reports what happened as an
event; it never decides fallback and never writes message state. A turn further away than
``VOLUBLE_RATE_MAX_WAIT`` re-schedules the job to it (``requeue_deferred``) instead of holding a worker.
``message_sent`` and ``attempt_failed`` run on the ``events`` queue: the coordinator applies them.
``sweep`` is a cron job that finds work the queues lost (a killed worker, a restarted Redis) and puts it back.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from saq import Job, Status
from sqlalchemy import or_, select
from sqlalchemy.orm import noload

from app.clock import utcnow
from app.contacts.models import Contact
from app.logging import get_logger
from app.messaging.coordinator import Coordinator
from app.messaging.models import Attempt, AttemptOutcome, Message, MessageState
from app.messaging.receipts import apply_receipt, receipt_of, replay_later
from app.messaging.usable import plugin_here
from app.plugins.base import ContactInfo, OutgoingMessage, PluginError
from app.queues import EVENT_JOB_OPTIONS, EVENTS_QUEUE, SEND_QUEUE, JobContext, send_job_key
from app.servicehost.ratelimit import SCHEDULE_AHEAD, SCHEDULE_SLACK, SendLimiter
from app.servicehost.registry import PluginRegistry
from app.servicehost.services import CredentialService
from app.tenants.deps import scoped
from app.tenants.models import Organization

log = get_logger(__name__)


class MessagingContext(JobContext):
    """The context of the pipeline's jobs: the process's plugins and its coordinator besides the rest."""

    registry: PluginRegistry
    coordinator: Coordinator
    #: the send rates of every (service, organization), shared with the other workers in Redis
    limiter: SendLimiter


#: a send job still queued or running after this long is given up as lost
LOST_AFTER = timedelta(minutes=15)


def _contact_info(contact: Contact) -> ContactInfo:
    return ContactInfo(
        id=contact.id,
        title=contact.title,
        first_name=contact.first_name,
        surname=contact.surname,
        phone=contact.phone,
        email=contact.email,
        telegram_chat_id=contact.telegram_chat_id,
    )


async def _attempt_send(ctx: MessagingContext, attempt_id: UUID, turn_at: float | None) -> dict[str, Any] | None:
    """Call the plugin for a pending attempt; the event to report, or None if there is nothing to do."""
    async with ctx["sessions"]() as session:
        attempt = await session.get(Attempt, attempt_id)
        if attempt is None or attempt.outcome != AttemptOutcome.PENDING:
            return None
        message = await session.get(Message, attempt.message_id)
        contact = (
            await session.get(Contact, message.contact_id, options=[noload(Contact.categories)]) if message else None
        )
        if message is None or contact is None:
            return {"outcome": "failed", "reason": "message or contact no longer exists"}
        plugin = plugin_here(ctx["registry"], attempt.service)
        if isinstance(plugin, str):
            return {"outcome": "failed", "reason": plugin}
        credentials_service = scoped(
            CredentialService, session, message.organization_id, settings=ctx["settings"], registry=ctx["registry"]
        )
        try:
            credentials = await credentials_service.get_decrypted(attempt.service)
        except PluginError as exc:  # undecryptable, or no longer valid for the plugin
            return {"outcome": "failed", "reason": f"credentials unreadable: {exc}"}
        except Exception as exc:  # unreadable credentials are this attempt's failure, never the worker's
            return {"outcome": "failed", "reason": f"credentials unreadable: {type(exc).__name__}"}
        info = plugin.info
        address = getattr(contact, info.address_field) if info.address_field else None
        org = await session.get(Organization, message.organization_id)
        outgoing = OutgoingMessage(
            id=message.id,
            organization_id=message.organization_id,
            content=message.content,
            contact=_contact_info(contact),
            subject=f"Message from {org.name}" if org else "Message",
        )
    # the service's turn, right before its call (so that the work above does not delay the send past it)
    turn_at = await ctx["limiter"].turn(attempt.service, attempt.organization_id, turn_at)
    if (wait := turn_at - time.time()) > max(ctx["settings"].worker.rate_max_wait, SCHEDULE_SLACK):
        return {"outcome": "deferred", "turn_at": turn_at}  # far: come back then rather than hold a worker
    if wait > 0:  # the heartbeat keeps beating meanwhile
        await asyncio.sleep(wait)
    timeout = ctx["settings"].worker.send_timeout
    try:
        provider_id = await asyncio.wait_for(plugin.send(outgoing, address, credentials), timeout)
    except PluginError as exc:
        return {"outcome": "failed", "reason": str(exc) or type(exc).__name__}
    except TimeoutError:
        return {"outcome": "failed", "reason": f"timeout: no answer within {timeout:g}s"}
    except Exception as exc:
        log.warning("plugin raised", service=attempt.service, error=repr(exc))
        return {"outcome": "failed", "reason": f"plugin error: {type(exc).__name__}: {exc}"[:1000]}
    if not isinstance(provider_id, str) or not provider_id.strip() or len(provider_id) > 255:
        return {"outcome": "failed", "reason": "plugin returned no usable provider message id"}
    return {"outcome": "sent", "provider_message_id": provider_id.strip()}


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
            **EVENT_JOB_OPTIONS,
        )
    else:
        await queue.enqueue(
            "attempt_failed",
            attempt_id=attempt_id,
            reason=event["reason"],
            key=f"event:{attempt_id}",
            **EVENT_JOB_OPTIONS,
        )


async def _heartbeat(job: Any, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await job.update()


async def send_message(
    ctx: MessagingContext, *, attempt_id: str, turn_at: float | None = None
) -> dict[str, Any] | None:
    """``turn_at``: the moment of the turn under the service's rate this job holds (re-scheduled to it)."""
    job = ctx.get("job")
    beat = None
    if job is not None and job.heartbeat:
        beat = asyncio.create_task(_heartbeat(job, max(job.heartbeat / 3, 0.5)))
    try:
        event = await _attempt_send(ctx, UUID(attempt_id), turn_at)
    finally:
        if beat is not None:
            beat.cancel()
            # an update in flight lands before the job is finished (and re-enqueued, if it deferred itself)
            await asyncio.gather(beat, return_exceptions=True)
    if event is not None:
        await report(ctx, attempt_id, event)
    return event


def is_deferred(result: Any) -> bool:
    """Whether a send job's result says it gave its rate-limited turn back, to come again later."""
    return isinstance(result, dict) and result.get("outcome") == "deferred"


async def requeue_deferred(ctx: MessagingContext) -> None:
    """SAQ's ``after_process`` of the send workers: a job that deferred itself (its turn under the
    service's rate was further than ``rate_max_wait``) is enqueued again under the same key, holding
    its turn, scheduled a couple of seconds before it (SAQ schedules by the second). Each send defers at most once
    (unless it comes back late). If this process dies before that, the sweep re-enqueues it."""
    job = ctx.get("job")
    if job is None or job.status != Status.COMPLETE or not is_deferred(job.result):
        return
    turn_at = float(job.result["turn_at"])
    again = Job(
        function=job.function,
        kwargs={**(job.kwargs or {}), "turn_at": turn_at},
        key=job.key,
        timeout=job.timeout,
        heartbeat=job.heartbeat,
        retries=job.retries,
        ttl=job.ttl,
        scheduled=max(int(turn_at) - SCHEDULE_AHEAD, int(time.time()) + 1),
    )
    try:
        await job.get_queue().enqueue(again)
    except Exception as exc:
        log.warning("deferred send not re-enqueued; the sweep will", job=job.key, error=repr(exc))


async def message_sent(ctx: MessagingContext, *, attempt_id: str, provider_message_id: str) -> None:
    coordinator = ctx["coordinator"]
    async with ctx["sessions"]() as session:
        await coordinator.on_sent(session, UUID(attempt_id), provider_message_id)


async def attempt_failed(ctx: MessagingContext, *, attempt_id: str, reason: str) -> None:
    coordinator = ctx["coordinator"]
    async with ctx["sessions"]() as session:
        await coordinator.on_failed(session, UUID(attempt_id), reason)


async def replay_receipt(
    ctx: MessagingContext, *, organization_id: str, service: str, receipt: dict[str, Any], tries: int
) -> str:
    """A receipt that arrived before its message had the provider's id, applied again (app/messaging/receipts.py)."""
    parsed = receipt_of(receipt)
    async with ctx["sessions"]() as session:
        outcome = await apply_receipt(session, ctx["coordinator"], UUID(organization_id), service, parsed)
    if outcome == "unknown":
        await replay_later(ctx["coordinator"], UUID(organization_id), service, parsed, tries)
    return outcome


def _since(job: Job, started_at: datetime) -> datetime:
    """Since when a queued or running send job has been waiting: a running one since it started, a queued
    one since it was (re-)queued or scheduled for (a job re-scheduled to its turn under the service's rate)."""
    ms = job.started if job.status == Status.ACTIVE else max(job.queued, job.scheduled * 1000)
    return max(started_at, datetime.fromtimestamp(ms / 1000, UTC)) if ms else started_at


async def sweep(ctx: MessagingContext) -> dict[str, int]:
    """Recover what the queues lost; dispatch scheduled messages that are due."""
    coordinator = ctx["coordinator"]
    send_queue = ctx["queues"][SEND_QUEUE]
    now = utcnow()
    stale_after = timedelta(seconds=ctx["settings"].worker.stale_seconds)
    counts = {"dispatched": 0, "requeued": 0, "replayed": 0, "lost": 0}
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
    for message_id in due:
        async with ctx["sessions"]() as session:
            await coordinator.dispatch(session, message_id)
        counts["dispatched"] += 1
    for attempt in stale:
        job = await send_queue.job(send_job_key(attempt.id))
        # Redis lost it, or the re-enqueue of a job that deferred itself for its rate got lost: send again
        if job is None or (job.status == Status.COMPLETE and is_deferred(job.result)):
            await coordinator.enqueue_send(attempt.id)
            counts["requeued"] += 1
        elif job.status == Status.COMPLETE and isinstance(job.result, dict):  # the event got lost
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
    if any(counts.values()):
        log.info("sweep", **counts)
    return counts
