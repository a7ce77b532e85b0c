"""Moving events to endpoints: fan-out of the outbox into deliveries, and one attempt of a delivery.

Every function takes ``now`` (default :func:`app.clock.utcnow`), so the retry schedule and the 3-day
disabling are tested by calling them at chosen times, without sleeping. Deliveries live in the database:
Redis only carries the jobs that run them, and the dispatcher finds any due delivery again (after an
outage, a lost job or a dead worker)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import httpx
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app import __version__
from app.clock import aware, utcnow
from app.logging import get_logger
from app.plugins.base import CredentialsError
from app.plugins.crypto import CredentialsUnavailable
from app.plugins.transport import guarded_transport
from app.webhooks import signing
from app.webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from app.webhooks.services import WebhookSecrets

log = get_logger(__name__)

#: seconds to wait before attempt n+1 (``SCHEDULE[0]``: the first attempt, at once); then given up
SCHEDULE = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
#: an endpoint without a success for this long is disabled
DISABLE_AFTER = timedelta(days=3)
#: a claimed delivery is due again after this long if its worker died mid-attempt
LEASE = timedelta(seconds=60)
TIMEOUT = 10.0
#: bytes of the answer kept in the log
KEEP = 1024
OPEN = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
#: events fanned out, and due deliveries found, per query
BATCH = 500


async def fan_out(session: AsyncSession, now: datetime | None = None, limit: int = BATCH) -> int:
    """Turn undispatched events into one delivery per subscribed, enabled endpoint; commits.

    An event no endpoint wants is deleted (the outbox is not a log). Returns the events handled."""
    now = now or utcnow()
    events = list(
        await session.scalars(
            select(WebhookEvent)
            .where(WebhookEvent.dispatched_at.is_(None))
            .order_by(WebhookEvent.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not events:
        await session.rollback()
        return 0
    endpoints = await session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.organization_id.in_({e.organization_id for e in events}), WebhookEndpoint.enabled
        )
    )
    by_org: dict[UUID, list[WebhookEndpoint]] = {}
    for endpoint in endpoints:
        by_org.setdefault(endpoint.organization_id, []).append(endpoint)
    unwanted = []
    for event in events:
        wanted = [ep for ep in by_org.get(event.organization_id, []) if event.type in ep.event_types]
        for endpoint in wanted:
            session.add(
                WebhookDelivery(
                    organization_id=event.organization_id,
                    event_id=event.id,
                    endpoint_id=endpoint.id,
                    event_type=event.type,
                    next_attempt_at=now,
                )
            )
        if wanted:
            event.dispatched_at = now
        else:
            unwanted.append(event.id)
    if unwanted:
        await session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(unwanted)))
    await session.commit()
    return len(events)


async def due(session: AsyncSession, now: datetime | None = None, limit: int = BATCH) -> list[tuple[UUID, datetime]]:
    """``(delivery id, its due time)`` of the deliveries due at ``now``, oldest first."""
    now = now or utcnow()
    rows = await session.execute(
        select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
        .where(WebhookDelivery.status.in_(OPEN), WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    result = [(row[0], aware(row[1])) for row in rows]
    await session.rollback()
    return result


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    latency_ms: int
    body: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def post(url: str, content: bytes, headers: dict[str, str], allow_private: bool) -> Outcome:
    """One POST: 10 s, redirects not followed, the network guard applied; never raises."""
    started = time.monotonic()
    status: int | None = None
    kept = bytearray()
    error: str | None = None
    try:
        async with (
            asyncio.timeout(TIMEOUT),
            httpx.AsyncClient(
                transport=guarded_transport(allow_private),
                timeout=httpx.Timeout(TIMEOUT),
                follow_redirects=False,
                trust_env=False,
            ) as client,
            client.stream(
                "POST", url, content=content, headers={**headers, "user-agent": f"Voluble-Webhooks/{__version__}"}
            ) as response,
        ):
            status = response.status_code
            async for chunk in response.aiter_bytes():
                kept += chunk
                if len(kept) >= KEEP:
                    break
    except CredentialsError as exc:
        error = str(exc)
    except (TimeoutError, httpx.TimeoutException):
        error = f"No answer within {TIMEOUT:g} s."
    except (httpx.HTTPError, OSError) as exc:
        error = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)[:1000]
    latency = int((time.monotonic() - started) * 1000)
    body = bytes(kept[:KEEP]).decode("utf-8", "replace") if status is not None else None
    return Outcome(status, latency, body, error)


async def attempt(
    session: AsyncSession,
    secrets: WebhookSecrets,
    delivery_id: UUID,
    *,
    allow_private: bool,
    now: datetime | None = None,
) -> DeliveryStatus | None:
    """Make one attempt of a due delivery; commits. None when it was not due (claimed elsewhere, done)."""
    now = now or utcnow()
    lease = now + LEASE
    claimed = await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status.in_(OPEN),
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(next_attempt_at=lease)
        .execution_options(synchronize_session=False)
    )
    if not claimed.rowcount:  # type: ignore[attr-defined]
        await session.rollback()
        return None
    delivery = await session.get_one(WebhookDelivery, delivery_id, populate_existing=True)
    endpoint = await session.get_one(WebhookEndpoint, delivery.endpoint_id, populate_existing=True)
    event = await session.get_one(WebhookEvent, delivery.event_id)
    if not endpoint.enabled:
        await _finish(session, delivery_id, lease, DeliveryStatus.GIVEN_UP, None, count=False)
        return DeliveryStatus.GIVEN_UP
    url, endpoint_id = endpoint.url, endpoint.id
    try:
        keys = secrets.signing_keys(endpoint, now)
    except CredentialsUnavailable as exc:
        outcome = Outcome(None, 0, None, str(exc))
        await session.commit()
    else:
        content = signing.body(event.type, aware(event.created_at), event.payload)
        headers = signing.headers(keys, str(event.id), now, content)
        await session.commit()  # the claim; no transaction stays open during the request
        outcome = await post(url, content, headers, allow_private)
    attempts = delivery.attempts + 1
    session.add(
        WebhookAttempt(
            organization_id=delivery.organization_id,
            delivery_id=delivery_id,
            attempted_at=now,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            response_body=outcome.body,
            error=outcome.error,
        )
    )
    if outcome.ok:
        status = DeliveryStatus.DELIVERED
        await _finish(session, delivery_id, lease, status, None)
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(last_success_at=now, failing_since=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    else:
        given_up = attempts >= len(SCHEDULE)
        status = DeliveryStatus.GIVEN_UP if given_up else DeliveryStatus.FAILED
        next_at = None if given_up else now + timedelta(seconds=SCHEDULE[attempts])
        await _finish(session, delivery_id, lease, status, next_at)
        if await _failed(session, endpoint_id, now):
            status = DeliveryStatus.GIVEN_UP
    await session.commit()
    return status


async def _finish(
    session: AsyncSession,
    delivery_id: UUID,
    lease: datetime,
    status: DeliveryStatus,
    next_at: datetime | None,
    *,
    count: bool = True,
) -> None:
    """Count the attempt; set the outcome unless the delivery changed meanwhile (a replay while this
    attempt was in flight keeps its new due time)."""
    table = WebhookDelivery
    if count:
        await session.execute(
            update(table)
            .where(table.id == delivery_id)
            .values(attempts=table.attempts + 1)
            .execution_options(synchronize_session=False)
        )
    await session.execute(
        update(table)
        .where(table.id == delivery_id, table.next_attempt_at == lease)
        .values(status=status, next_attempt_at=next_at, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def _failed(session: AsyncSession, endpoint_id: UUID, now: datetime) -> bool:
    """Note the failure on the endpoint; disable it when it has not succeeded for :data:`DISABLE_AFTER`
    (its open deliveries are given up). True when this disabled it."""
    await session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(failing_since=func.coalesce(WebhookEndpoint.failing_since, now))
        .execution_options(synchronize_session=False)
    )
    since = aware(await session.scalar(select(WebhookEndpoint.failing_since).where(WebhookEndpoint.id == endpoint_id)))
    if since is None or now - since < DISABLE_AFTER:
        return False
    reason = f"Disabled on {now:%Y-%m-%d %H:%M} UTC: no successful delivery since {since:%Y-%m-%d %H:%M} UTC (3 days)."
    disabled = await session.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.enabled)
        .values(enabled=False, disabled_reason=reason, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if disabled.rowcount:  # type: ignore[attr-defined]
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status.in_(OPEN))
            .values(status=DeliveryStatus.GIVEN_UP, next_attempt_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        log.warning("webhook endpoint disabled", endpoint_id=str(endpoint_id), reason=reason)
        return True
    return False
