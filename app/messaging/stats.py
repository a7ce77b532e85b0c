"""What the dashboard and ``GET /api/v1/stats`` show: a handful of ``GROUP BY`` queries, never a message
loaded into Python. One :class:`Stats` answers for one organization, or for the whole instance (the
sysadmin's view) when built with :meth:`Stats.instance`; every query goes through :meth:`Stats._own`,
the one place the organization filter is applied.

Definitions (all times UTC; a window is ``[since, until)``):

* **messages per day** — messages *created* in the window (both directions: an incoming one counts under
  ``MSG_RECEIVED``), counted per day of ``created_at`` and per current state. The current state is the
  final one for a message that is done; ``MSG_PENDING``/``MSG_SENDING`` are the ones still in flight.
* **per service** (the last 7 days before ``until``, or the whole window if it is shorter) — from the
  *attempts* started in that period: ``sent`` (the service accepted it), ``failed`` (it refused it),
  ``undelivered`` (it accepted it, then reported it could not deliver it), ``pending`` (in progress);
  and from the *messages* created in that period: ``delivered``, those whose sending service is that
  service and whose state reached ``MSG_DELIVERED_SERVICE`` or beyond. ``delivery_rate`` is
  ``delivered / attempts`` (``None`` without attempts).
* **fallback per chain** (same period) — outgoing messages created then with a servicechain and at least one
  attempt: ``messages``; ``fell_back``, those whose first attempt (``seq = 0``) ended ``failed`` or
  ``undelivered``; ``fallback_rate = fell_back / messages``.
* **credits** (``PAY_IN_ADVANCE`` only) — ``left`` is ``credits - credits_reserved`` (what can still be
  reserved), ``reserved`` the credits held by messages in flight; ``spent`` per day is the number of
  messages whose credit is ``charged``, by day of ``sent_at`` (a credit is charged when a service sends).
  For the instance: the sum over the ``PAY_IN_ADVANCE`` organizations.
* **latest replies** — the newest incoming messages (no window).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import utcnow
from app.errors import NotFound, ValidationProblem
from app.messaging import rollup
from app.messaging.counts import ALL_KINDS, DAY_KINDS, DELIVERED, RECENT_KINDS, Counts, Span, Tally, unindexed
from app.messaging.models import Direction, Message, MessageState, Servicechain
from app.tenants.models import Organization, Plan
from app.tenants.principal import Principal

__all__ = ["CHART_STATES", "DELIVERED", "Figures", "Stats", "Window"]

DEFAULT_DAYS = 30
SERVICE_DAYS = 7
MAX_DAYS = 366
LATEST_REPLIES = 10
GRANULARITIES = ("day",)
#: states in the order the chart stacks them
CHART_STATES = (
    MessageState.PENDING,
    MessageState.SENDING,
    MessageState.SENT,
    *DELIVERED,
    MessageState.FAILED,
    MessageState.RECEIVED,
)


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime
    granularity: str = "day"

    @classmethod
    def parse(
        cls, since: datetime | None = None, until: datetime | None = None, granularity: str | None = None
    ) -> Window:
        """The window asked for (default: the last 30 days); a bad one is a 422, never a 500."""
        if granularity not in (None, *GRANULARITIES):
            raise ValidationProblem("granularity must be 'day'.", "granularity")
        end = _aware(until) if until else utcnow()
        start = _aware(since) if since else end - timedelta(days=DEFAULT_DAYS)
        if start >= end:
            raise ValidationProblem("since must be before until.", "since")
        if end - start > timedelta(days=MAX_DAYS):
            raise ValidationProblem(f"The window is at most {MAX_DAYS} days.", "since")
        return cls(start, end)

    @property
    def recent(self) -> Window:
        """The period of the per-service and per-chain figures: the last 7 days of the window."""
        return Window(max(self.since, self.until - timedelta(days=SERVICE_DAYS)), self.until)

    @property
    def span(self) -> Span:
        return Span(self.since, self.until)

    def days(self) -> list[str]:
        first, last = self.since.date(), (self.until - timedelta(microseconds=1)).date()
        return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass
class ServiceFigures:
    service: str
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    undelivered: int = 0
    pending: int = 0

    @property
    def attempts(self) -> int:
        return self.sent + self.failed + self.undelivered + self.pending

    @property
    def delivery_rate(self) -> float | None:
        return round(self.delivered / self.attempts, 4) if self.attempts else None


@dataclass
class ChainFigures:
    servicechain_id: UUID
    name: str
    messages: int
    fell_back: int

    @property
    def fallback_rate(self) -> float | None:
        return round(self.fell_back / self.messages, 4) if self.messages else None


@dataclass
class Credits:
    left: int
    reserved: int
    spent_per_day: dict[str, int]

    @property
    def spent(self) -> int:
        return sum(self.spent_per_day.values())


@dataclass
class Reply:
    id: UUID
    contact_id: UUID
    content: str
    service: str | None
    created_at: datetime


@dataclass
class Figures:
    window: Window
    organization_id: UUID | None
    per_day: dict[str, dict[str, int]]
    services: list[ServiceFigures]
    chains: list[ChainFigures]
    credits: Credits | None
    latest_replies: list[Reply] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(sum(states.values()) for states in self.per_day.values())


class Stats:
    """The dashboard's figures for one organization (``organization_id``) or the instance (``None``).

    An organization's closed days come from its rollup (:func:`app.messaging.rollup.covered_days`), the
    rest of the window — its partial first day, the days not rolled up yet, a day with a late change —
    from the live counts of :class:`app.messaging.counts.Counts`: the same queries, so the same numbers.
    The instance's are all live."""

    def __init__(self, *, session: AsyncSession, organization_id: UUID | None) -> None:
        self.session = session
        self.organization_id = organization_id
        self.counts = Counts(session, organization_id)

    @classmethod
    def instance(cls, session: AsyncSession) -> Stats:
        """Every organization's figures together: the sysadmin's dashboard."""
        return cls(session=session, organization_id=None)

    @classmethod
    async def for_principal(
        cls, session: AsyncSession, principal: Principal, organization_id: UUID | None = None
    ) -> Stats:
        """A member's: their organization (naming another is a 404). A sysadmin's: the instance, or the
        organization they name (an unknown one is a 404)."""
        if principal.is_sysadmin:
            if organization_id is None:
                return cls.instance(session)
            if await session.get(Organization, organization_id) is None:
                raise NotFound("Organization not found")
            return cls(session=session, organization_id=organization_id)
        if organization_id is not None and organization_id != principal.organization_id:
            raise NotFound("Organization not found")
        if principal.organization_id is None:  # pragma: no cover - only a sysadmin has none
            raise NotFound("Organization not found")
        return cls(session=session, organization_id=principal.organization_id)

    def _own(self, statement: Select[Any], column: Any) -> Select[Any]:
        return self.counts._own(statement, column)

    async def _rows(self, statement: Select[Any]) -> list[Any]:
        return list((await self.session.execute(statement)).all())

    async def tally(self, window: Window) -> Tally:
        """Every count of the window: the per-day kinds over the window, the others over its recent part;
        the rolled-up days read from the rollup, the rest counted live."""
        await self.counts.without_jit()
        recent = window.recent.span
        covered: frozenset[date] = frozenset()
        if self.organization_id is not None:
            covered = await rollup.covered_days(self.session, self.organization_id, window.span.full_days())
        covered_recent = covered & frozenset(recent.full_days())
        out: Tally = Counter()
        if self.organization_id is not None:
            out.update(await rollup.stored(self.session, self.organization_id, covered, DAY_KINDS))
            out.update(await rollup.stored(self.session, self.organization_id, covered_recent, RECENT_KINDS))
        day_parts, recent_parts = window.span.without(covered), recent.without(covered_recent)
        for part in day_parts:  # a part of both (today, usually) is counted once for both
            out.update(await self.counts.tally(part, ALL_KINDS if part in recent_parts else DAY_KINDS))
        for part in recent_parts:
            if part not in day_parts:
                out.update(await self.counts.tally(part, RECENT_KINDS))
        return out

    async def figures(self, window: Window) -> Figures:
        tally = await self.tally(window)
        return Figures(
            window=window,
            organization_id=self.organization_id,
            per_day=self.per_day(window, tally),
            services=self.services(tally),
            chains=await self.chains(tally),
            credits=await self.credits(window, tally),
            latest_replies=await self.latest_replies(),
        )

    @staticmethod
    def per_day(window: Window, tally: Tally) -> dict[str, dict[str, int]]:
        """{day: {state: count}} for every day of the window (days without messages: ``{}``)."""
        out: dict[str, dict[str, int]] = {d: {} for d in window.days()}
        for (kind, day, state, _), count in sorted(tally.items()):
            if kind == "state" and count:
                out.setdefault(day, {})[state] = count
        return out

    @staticmethod
    def services(tally: Tally) -> list[ServiceFigures]:
        found: dict[str, ServiceFigures] = {}
        for (kind, _, service, outcome), count in tally.items():
            if kind == "attempt" and count:
                figures = found.setdefault(service, ServiceFigures(service))
                setattr(figures, outcome, getattr(figures, outcome) + count)
            elif kind == "delivered" and count:
                found.setdefault(service, ServiceFigures(service)).delivered += count
        return sorted(found.values(), key=lambda f: f.service)

    async def chains(self, tally: Tally) -> list[ChainFigures]:
        messages: Counter[str] = Counter()
        fell_back: Counter[str] = Counter()
        for (kind, _, chain_id, _), count in tally.items():
            if kind == "chain":
                messages[chain_id] += count
            elif kind == "fell_back":
                fell_back[chain_id] += count
        ids = [UUID(c) for c, n in messages.items() if n]
        if not ids:
            return []
        names = self._own(
            select(Servicechain.id, Servicechain.name).where(Servicechain.id.in_(ids)), Servicechain.organization_id
        )
        return sorted(
            (
                ChainFigures(chain_id, name, messages[str(chain_id)], fell_back[str(chain_id)])
                for chain_id, name in await self._rows(names)
            ),
            key=lambda c: c.name,
        )

    async def credits(self, window: Window, tally: Tally) -> Credits | None:
        prepaid: ColumnElement[bool] = Organization.plan == Plan.PAY_IN_ADVANCE
        balance = self._own(
            select(func.count(), func.sum(Organization.credits), func.sum(Organization.credits_reserved)).where(
                prepaid
            ),
            Organization.id,
        )
        count, credits, reserved = (await self.session.execute(balance)).one()
        if not count:
            return None
        per_day = {d: 0 for d in window.days()}
        for (kind, day, _, _), n in tally.items():
            if kind == "spent":
                per_day[day] = per_day.get(day, 0) + n
        return Credits(left=int(credits or 0) - int(reserved or 0), reserved=int(reserved or 0), spent_per_day=per_day)

    async def latest_replies(self, limit: int = LATEST_REPLIES) -> list[Reply]:
        statement = self._own(
            select(Message.id, Message.contact_id, Message.content, Message.service, Message.created_at)
            # the newest first along (organization_id, created_at), not all incoming ones sorted (SQLite)
            .where(unindexed(Message.direction) == Direction.INCOMING)
            .order_by(Message.created_at.desc())
            .limit(limit),
            Message.organization_id,
        )
        return [Reply(*row) for row in await self._rows(statement)]
