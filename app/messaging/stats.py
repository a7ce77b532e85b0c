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

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import String

from app.clock import utcnow
from app.errors import NotFound, ValidationProblem
from app.messaging.models import Attempt, AttemptOutcome, CreditState, Direction, Message, MessageState, Servicechain
from app.tenants.models import Organization, Plan
from app.tenants.principal import Principal

DEFAULT_DAYS = 30
SERVICE_DAYS = 7
MAX_DAYS = 366
LATEST_REPLIES = 10
GRANULARITIES = ("day",)
DELIVERED = (MessageState.DELIVERED_SERVICE, MessageState.DELIVERED_USER, MessageState.READ, MessageState.REPLIED)
#: states in the order the chart stacks them
CHART_STATES = (
    MessageState.PENDING,
    MessageState.SENDING,
    MessageState.SENT,
    *DELIVERED,
    MessageState.FAILED,
    MessageState.RECEIVED,
)


class day_of(FunctionElement[str]):
    """The UTC day of a timestamp column, in each dialect's own words (read it with :func:`day_key`):
    ``date_trunc`` on PostgreSQL (cheaper than formatting every row), the ISO text's date on SQLite."""

    type = String()
    inherit_cache = True


@compiles(day_of, "postgresql")
def _day_pg(element: day_of, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    return f"date_trunc('day', ({compiler.process(column, **kw)}) AT TIME ZONE 'UTC')"


@compiles(day_of)
def _day_default(element: day_of, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)  # SQLite keeps UTC timestamps as ISO text
    return f"substr({compiler.process(column, **kw)}, 1, 10)"


def day_key(value: Any) -> str:
    """``YYYY-MM-DD`` of what :class:`day_of` gave (a timestamp on PostgreSQL, text on SQLite)."""
    return value.date().isoformat() if isinstance(value, datetime) else str(value)[:10]


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
    """The dashboard's figures for one organization (``organization_id``) or the instance (``None``)."""

    def __init__(self, *, session: AsyncSession, organization_id: UUID | None) -> None:
        self.session = session
        self.organization_id = organization_id

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
        return statement if self.organization_id is None else statement.where(column == self.organization_id)

    async def _rows(self, statement: Select[Any]) -> list[Any]:
        return list((await self.session.execute(statement)).all())

    async def figures(self, window: Window) -> Figures:
        return Figures(
            window=window,
            organization_id=self.organization_id,
            per_day=await self.per_day(window),
            services=await self.services(window.recent),
            chains=await self.chains(window.recent),
            credits=await self.credits(window),
            latest_replies=await self.latest_replies(),
        )

    async def per_day(self, window: Window) -> dict[str, dict[str, int]]:
        """{day: {state: count}} for every day of the window (days without messages: ``{}``)."""
        day = day_of(Message.created_at)
        statement = self._own(
            select(day, Message.state, func.count())
            .where(Message.created_at >= window.since, Message.created_at < window.until)
            .group_by(day, Message.state),
            Message.organization_id,
        )
        out: dict[str, dict[str, int]] = {d: {} for d in window.days()}
        for when, state, count in await self._rows(statement):
            out.setdefault(day_key(when), {})[str(state)] = int(count)
        return out

    async def services(self, window: Window) -> list[ServiceFigures]:
        found: dict[str, ServiceFigures] = {}
        attempts = self._own(
            select(Attempt.service, Attempt.outcome, func.count())
            .where(Attempt.started_at >= window.since, Attempt.started_at < window.until)
            .group_by(Attempt.service, Attempt.outcome),
            Attempt.organization_id,
        )
        for service, outcome, count in await self._rows(attempts):
            figures = found.setdefault(service, ServiceFigures(service))
            setattr(figures, AttemptOutcome(outcome).value, int(count))
        delivered = self._own(
            select(Message.service, func.count())
            .where(
                Message.created_at >= window.since,
                Message.created_at < window.until,
                Message.direction == Direction.OUTGOING,
                Message.state.in_(DELIVERED),
                Message.service.is_not(None),
            )
            .group_by(Message.service),
            Message.organization_id,
        )
        for service, count in await self._rows(delivered):
            found.setdefault(service, ServiceFigures(service)).delivered = int(count)
        return sorted(found.values(), key=lambda f: f.service)

    async def chains(self, window: Window) -> list[ChainFigures]:
        failed_first = case((Attempt.outcome.in_((AttemptOutcome.FAILED, AttemptOutcome.UNDELIVERED)), 1), else_=0)
        statement = self._own(
            select(Servicechain.id, Servicechain.name, func.count(), func.sum(failed_first))
            .select_from(Message)
            .join(
                Attempt,
                and_(
                    Attempt.message_id == Message.id,
                    Attempt.seq == 0,
                    # the same rows, said so the index (organization_id, started_at) narrows the attempts:
                    # a first attempt starts after its message was created, so inside the window's start
                    Attempt.organization_id == Message.organization_id,
                    Attempt.started_at >= window.since,
                ),
            )
            .join(Servicechain, Servicechain.id == Message.servicechain_id)
            .where(
                Message.created_at >= window.since,
                Message.created_at < window.until,
                Message.direction == Direction.OUTGOING,
            )
            .group_by(Servicechain.id, Servicechain.name),
            Message.organization_id,
        )
        rows = await self._rows(statement)
        return sorted(
            (ChainFigures(chain_id, name, int(count), int(fell or 0)) for chain_id, name, count, fell in rows),
            key=lambda c: c.name,
        )

    async def credits(self, window: Window) -> Credits | None:
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
        day = day_of(Message.sent_at)
        spent = self._own(
            select(day, func.count())
            .join(Organization, Organization.id == Message.organization_id)
            .where(
                prepaid,
                Message.credit == CreditState.CHARGED,
                Message.sent_at >= window.since,
                Message.sent_at < window.until,
            )
            .group_by(day),
            Message.organization_id,
        )
        per_day = {d: 0 for d in window.days()}
        for when, n in await self._rows(spent):
            per_day[day_key(when)] = int(n)
        return Credits(left=int(credits or 0) - int(reserved or 0), reserved=int(reserved or 0), spent_per_day=per_day)

    async def latest_replies(self, limit: int = LATEST_REPLIES) -> list[Reply]:
        statement = self._own(
            select(Message.id, Message.contact_id, Message.content, Message.service, Message.created_at)
            .where(Message.direction == Direction.INCOMING)
            .order_by(Message.created_at.desc())
            .limit(limit),
            Message.organization_id,
        )
        return [Reply(*row) for row in await self._rows(statement)]
