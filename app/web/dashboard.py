"""The dashboard's messaging figures (:mod:`app.messaging.stats`): what ``partials/_dashboard_stats.html``
shows, for the caller's organization or, for a sysadmin, the whole instance. The block asks for itself
again every few seconds and is answered 304 while nothing it shows changed (decision 0028)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.blasts import present as blast_views
from app.messaging.labels import STATE_LABELS
from app.messaging.models import Message
from app.messaging.stats import CHART_STATES, Stats, Window
from app.tenants.models import Organization
from app.tenants.principal import Principal
from app.web.common.live import etag_of, not_modified

STATS_TARGET = "dashboard-stats"
POLL_SECONDS = 10


async def _version(stats: Stats) -> tuple[Any, ...]:
    """What the figures depend on: the latest change of a message (one step on the index
    ``(organization_id, updated_at)``; for the instance, a scan of it) and the organizations' balances."""
    messages = select(func.max(Message.updated_at))
    orgs = select(func.count(), func.max(Organization.updated_at))
    if stats.organization_id is not None:
        messages = messages.where(Message.organization_id == stats.organization_id)
        orgs = orgs.where(Organization.id == stats.organization_id)
    blasts = await blast_views.latest_change(stats.session, stats.organization_id)
    return (*(await stats.session.execute(messages)).one(), *(await stats.session.execute(orgs)).one(), blasts)


async def dashboard_stats(
    request: Request[Any, Any, Any], session: AsyncSession, principal: Principal
) -> dict[str, Any] | Response[Any]:
    """The template context of the figures, or a 304 for a poll of a block that is up to date."""
    stats = await Stats.for_principal(session, principal)
    window = Window.parse()
    etag = etag_of("dashboard", stats.organization_id, window.days()[-1], await _version(stats))
    if (unchanged := not_modified(request, etag, STATS_TARGET)) is not None:
        return unchanged
    figures = await stats.figures(window)
    seen = {state for states in figures.per_day.values() for state in states}
    columns = [(str(s), STATE_LABELS[s]) for s in CHART_STATES if s in seen]
    return {
        "figures": figures,
        "chart_columns": columns,
        "stats_etag": etag,
        "stats_poll_seconds": POLL_SECONDS,
        "instance_wide": stats.organization_id is None,
        "running_blasts": await blast_views.running(session, stats.organization_id),
    }
