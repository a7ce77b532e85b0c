"""SAQ jobs of the pipeline.

``send_message`` runs on the ``send`` queue: it calls the plugin naively and reports what happened
as an event; it never decides fallback and never writes message state. ``message_sent`` and
``attempt_failed`` run on the ``events`` queue: the coordinator applies them. ``sweep`` is a cron job
that finds work the queues lost (a killed worker, a restarted Redis) and puts it back; ``roll_up_stats``
one that keeps the dashboard's counts of the closed days (:mod:`app.messaging.rollup`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from saq import Status
from sqlalchemy import exists, or_, select
from sqlalchemy.orm import noload

from app import metrics
from app.clock import utcnow
from app.contacts.models import Contact
from app.db.config import database_message, is_connection_error
from app.logging import get_logger
from app.messaging import rollup
from app.messaging.coordinator import Coordinator
from app.messaging.models import Attempt, AttemptOutcome, Message, MessageState
from app.messaging.receipts import apply_receipt, receipt_of, replay_later
from app.messaging.usable import plugin_here
from app.plugins.base import ContactInfo, OutgoingMessage, Plugin, PluginError
from app.queues import EVENT_JOB_OPTIONS, EVENTS_QUEUE, SEND_QUEUE, JobContext, send_job_key
from app.servicehost.registry import PluginRegistry
from app.servicehost.services import CredentialService
from app.tenants.deps import scoped
from app.tenants.models import Organization

log = get_logger(__name__)


class MessagingContext(JobContext):
    """The context of the pipeline's jobs: the process's plugins and its coordinator besides the rest."""

    registry: PluginRegistry
    coordinator: Coordinator


#: a send job still queued or running after this long is given up as lost
LOST_AFTER = timedelta(minutes=15)
#: how long a send job waits for an unreachable database before the plugin call (see send_job_options)
DATABASE_WAIT_SECONDS = 10.0


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


@dataclass(frozen=True)
class _Send:
    """What a pending attempt needs from the database to call its plugin."""

    plugin: Plugin
    outgoing: OutgoingMessage
    address: str | None
    credentials: Any


async def _prepare(ctx: MessagingContext, attempt_id: UUID) -> _Send | dict[str, Any] | None:
    """Read what the plugin needs; the event to report instead, or None if there is nothing to do."""
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
            if is_connection_error(exc):
                raise
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
    return _Send(plugin, outgoing, address, credentials)


async def _prepare_when_reachable(ctx: MessagingContext, attempt_id: UUID) -> _Send | dict[str, Any] | None:
    """:func:`_prepare`, waiting out a database that is away (restarted, failing over) for up to
    :data:`DATABASE_WAIT_SECONDS`: nothing has been sent yet, so reading again is safe. Past that, the
    error ends the job and the sweep records the attempt as lost (the chain moves on)."""
    deadline = time.monotonic() + DATABASE_WAIT_SECONDS
    delay = 0.25
    while True:
        try:
            return await _prepare(ctx, attempt_id)
        except Exception as exc:
            if not is_connection_error(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable; the send waits", attempt_id=str(attempt_id), error=database_message(exc))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def _attempt_send(ctx: MessagingContext, attempt_id: UUID) -> dict[str, Any] | None:
    """Call the plugin for a pending attempt; the event to report, or None if there is nothing to do."""
    ready = await _prepare_when_reachable(ctx, attempt_id)
    if not isinstance(ready, _Send):
        return ready
    timeout = ctx["settings"].worker.send_timeout
    try:
        sending = ready.plugin.send(ready.outgoing, ready.address, ready.credentials)
        with metrics.send_timer(ready.plugin.info.name):
            provider_id = await asyncio.wait_for(sending, timeout)
    except PluginError as exc:
        return {"outcome": "failed", "reason": str(exc) or type(exc).__name__}
    except TimeoutError:
        return {"outcome": "failed", "reason": f"timeout: no answer within {timeout:g}s"}
    except Exception as exc:
        log.warning("plugin raised", service=ready.plugin.info.name, error=repr(exc))
        return {"outcome": "failed", "reason": f"plugin error: {type(exc).__name__}: {exc}"[:1000]}
    if not isinstance(provider_id, str) or not provider_id.strip() or len(provider_id) > 255:
        return {"outcome": "failed", "reason": "plugin returned no usable provider message id"}
    return {"outcome": "sent", "provider_message_id": provider_id.strip()}


async def report(ctx: MessagingContext, attempt_id: str, event: dict[str, Any]) -> None:
    queue = ctx["queues"][EVENTS_QUEUE]
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


async def send_message(ctx: MessagingContext, *, attempt_id: str) -> dict[str, Any] | None:
    job = ctx.get("job")
    beat = None
    if job is not None and job.heartbeat:
        beat = asyncio.create_task(_heartbeat(job, max(job.heartbeat / 3, 0.5)))
    try:
        event = await _attempt_send(ctx, UUID(attempt_id))
    finally:
        if beat is not None:
            beat.cancel()
    if event is not None:
        try:
            await report(ctx, attempt_id, event)
        except Exception as exc:  # the send happened: never fail the job (a failed send job is a lost worker)
            # the job ends complete with the event as its result, and the sweep replays it
            log.warning("event not queued; the sweep will replay it", attempt_id=attempt_id, error=repr(exc))
    return event


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
    for attempt in stale:
        job = await send_queue.job(send_job_key(attempt.id))
        if job is None:  # Redis lost it: send again
            await coordinator.enqueue_send(attempt.id)
            counts["requeued"] += 1
        elif isinstance(job.result, dict) and job.status in (Status.COMPLETE, Status.ABORTED):
            # the send ran to its end and the event got lost (or is still queued: a replay is harmless).
            # ABORTED with a result: SAQ's sweep took the job, between its dequeue and its start, for an
            # orphan and marked it aborted after it completed (docs/decisions/0004): it was sent all the same
            await report(ctx, str(attempt.id), job.result)
            counts["replayed"] += 1
        elif job.status in (Status.FAILED, Status.ABORTED) or (
            job.status in (Status.QUEUED, Status.ACTIVE) and attempt.started_at < now - LOST_AFTER
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
    metrics.sweep_recovered(counts)
    if any(counts.values()):
        log.info("sweep", **counts)
    return counts


async def roll_up_stats(ctx: MessagingContext) -> dict[str, int]:
    """Cron (every minute): every organization's rollup brought up to date (decision 0032)."""
    return await rollup.roll_up_all(ctx["sessions"])
