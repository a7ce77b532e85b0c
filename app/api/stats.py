"""``GET /api/v1/stats``: the dashboard's numbers for integrators (see :mod:`app.messaging.stats`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.messaging.stats import Figures, Stats, Window
from app.tenants.guards import requires_scope
from app.tenants.principal import Principal


class DayCounts(msgspec.Struct):
    day: str
    total: int
    states: dict[str, int]


class ServiceOut(msgspec.Struct):
    service: str
    attempts: int
    sent: int
    delivered: int
    failed: int
    undelivered: int
    pending: int
    delivery_rate: float | None


class ChainOut(msgspec.Struct):
    servicechain_id: UUID
    name: str
    messages: int
    fell_back: int
    fallback_rate: float | None


class DaySpent(msgspec.Struct):
    day: str
    spent: int


class CreditsOut(msgspec.Struct):
    left: int
    reserved: int
    spent: int
    spent_per_day: list[DaySpent]


class ReplyOut(msgspec.Struct):
    id: UUID
    contact_id: UUID
    content: str
    service: str | None
    created_at: datetime


class StatsOut(msgspec.Struct):
    organization_id: UUID | None
    since: datetime
    until: datetime
    granularity: str
    #: the period of ``services`` and ``servicechains``: the last 7 days of the window
    recent_since: datetime
    total: int
    messages_per_day: list[DayCounts]
    services: list[ServiceOut]
    servicechains: list[ChainOut]
    credits: CreditsOut | None
    latest_replies: list[ReplyOut]


def stats_out(figures: Figures) -> StatsOut:
    window, credits = figures.window, figures.credits
    return StatsOut(
        organization_id=figures.organization_id,
        since=window.since,
        until=window.until,
        granularity=window.granularity,
        recent_since=window.recent.since,
        total=figures.total,
        messages_per_day=[DayCounts(d, sum(s.values()), s) for d, s in figures.per_day.items()],
        services=[
            ServiceOut(s.service, s.attempts, s.sent, s.delivered, s.failed, s.undelivered, s.pending, s.delivery_rate)
            for s in figures.services
        ],
        servicechains=[
            ChainOut(c.servicechain_id, c.name, c.messages, c.fell_back, c.fallback_rate) for c in figures.chains
        ],
        credits=None
        if credits is None
        else CreditsOut(
            credits.left, credits.reserved, credits.spent, [DaySpent(d, n) for d, n in credits.spent_per_day.items()]
        ),
        latest_replies=[
            ReplyOut(r.id, r.contact_id, r.content, r.service, r.created_at) for r in figures.latest_replies
        ],
    )


class StatsController(Controller):
    path = "/stats"
    tags = ["stats"]

    @get(
        "",
        summary="Messages per day by state, per service outcomes, fallback per chain, credits",
        guards=[requires_scope("messages:read")],
    )
    async def stats(
        self,
        principal: Principal,
        db_session: AsyncSession,
        since: datetime | None = None,
        until: datetime | None = None,
        granularity: Annotated[str | None, Parameter(max_length=16)] = None,
        organization_id: UUID | None = None,
    ) -> StatsOut:
        window = Window.parse(since, until, granularity)
        stats = await Stats.for_principal(db_session, principal, organization_id)
        return stats_out(await stats.figures(window))
