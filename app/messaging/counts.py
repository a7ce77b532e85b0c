"""The live counts behind the dashboard's figures, over one span of time ``[since, until)``: a handful of
``GROUP BY`` queries on the indexes of migration 0008, never a message loaded into Python.

:mod:`app.messaging.stats` adds them up over the parts of a window that the rollup does not hold (the
first and last, partial, days; today; a day with a late change), and :mod:`app.messaging.rollup` keeps
them per closed day. Both read them as one :data:`Tally`: ``(kind, day, key, subkey) → count``, the
shape of a :class:`app.messaging.models.StatsDay` row (``day`` is ``""`` for the kinds counted per
span, not per day). The kinds, and the time column each is of:

* ``state`` (``created_at``; key: the state) — messages of both directions;
* ``delivered`` (``created_at``; key: the service) — outgoing messages that reached ``DELIVERED``;
* ``chain`` and ``fell_back`` (``created_at``; key: the servicechain id) — outgoing messages with a first
  attempt, and those whose first attempt ended failed or undelivered;
* ``attempt`` (``started_at``; key: the service, subkey: the outcome);
* ``spent`` (``sent_at``) — messages whose credit is charged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import Select, and_, case, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import String

from app.messaging.models import Attempt, AttemptOutcome, CreditState, Direction, Message, MessageState
from app.tenants.models import Organization, Plan

DELIVERED = (MessageState.DELIVERED_SERVICE, MessageState.DELIVERED_USER, MessageState.READ, MessageState.REPLIED)
#: the kinds counted per day of the window, and those of the recent period (services, chains)
DAY_KINDS = frozenset({"state", "spent"})
RECENT_KINDS = frozenset({"attempt", "delivered", "chain", "fell_back"})
ALL_KINDS = DAY_KINDS | RECENT_KINDS
#: the kinds counted from the messages created in a span (the others: attempts, charged credits)
MESSAGE_KINDS = frozenset({"state", "delivered", "chain", "fell_back"})
#: a chain "fell back" when its first attempt ended so
FAILED_FIRST = frozenset({AttemptOutcome.FAILED, AttemptOutcome.UNDELIVERED})
ONE_DAY = timedelta(days=1)

Tally = Counter[tuple[str, str, str, str]]


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


class unindexed(FunctionElement[Any]):
    """A column that SQLite must not pick an index for (``+column``, SQLite's documented way): its
    planner, knowing only that both are ranges, may choose the wrong one of two indexes; PostgreSQL
    weighs them by its statistics and gets the column itself."""

    inherit_cache = True

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type  # compared, bound and read as the column itself (an enum stays an enum)


@compiles(unindexed)
def _unindexed_default(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    return str(compiler.process(column, **kw))


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    return f"+{compiler.process(column, **kw)}"


def day_key(value: Any) -> str:
    """``YYYY-MM-DD`` of what :class:`day_of` gave (a timestamp on PostgreSQL, text on SQLite)."""
    return value.date().isoformat() if isinstance(value, datetime) else str(value)[:10]


def start_of(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


@dataclass(frozen=True)
class Span:
    since: datetime
    until: datetime

    @classmethod
    def of_day(cls, day: date) -> Span:
        return cls(start_of(day), start_of(day + ONE_DAY))

    def full_days(self) -> list[date]:
        """The days that lie wholly inside the span."""
        first = self.since.date() if self.since == start_of(self.since.date()) else self.since.date() + ONE_DAY
        return [first + timedelta(days=i) for i in range((self.until.date() - first).days)]

    def without(self, days: frozenset[date]) -> list[Span]:
        """The span with those (whole) days taken out: the parts left, in order."""
        parts, cursor = [], self.since
        for day in sorted(days):
            if start_of(day) > cursor:
                parts.append(Span(cursor, start_of(day)))
            cursor = max(cursor, start_of(day + ONE_DAY))
        if cursor < self.until:
            parts.append(Span(cursor, self.until))
        return parts


class Counts:
    """The counts of one organization (``organization_id``) or of the instance (``None``)."""

    def __init__(self, session: AsyncSession, organization_id: UUID | None) -> None:
        self.session = session
        self.organization_id = organization_id

    async def without_jit(self) -> None:
        """On PostgreSQL, no JIT compilation for the rest of the transaction: the per-row fallback of
        :meth:`messages` lifts its estimated cost past ``jit_above_cost``, and compiling these small
        aggregates took longer (≈ 70 ms) than running them."""
        if self.session.bind.dialect.name == "postgresql":
            await self.session.execute(text("SET LOCAL jit = off"))

    def _own(self, statement: Select[Any], column: Any) -> Select[Any]:
        return statement if self.organization_id is None else statement.where(column == self.organization_id)

    async def _rows(self, statement: Select[Any]) -> list[Any]:
        return list((await self.session.execute(statement)).all())

    async def tally(self, span: Span, kinds: frozenset[str] = ALL_KINDS) -> Tally:
        out: Tally = Counter()
        if kinds & MESSAGE_KINDS:
            out.update(await self.messages(span, kinds))
        if "attempt" in kinds:
            out.update(await self.attempts(span))
        if "spent" in kinds:
            out.update(await self.spent(span))
        return out

    async def messages(self, span: Span, kinds: frozenset[str]) -> Tally:
        """The kinds of the messages created in the span: one scan of ``(organization_id, created_at)``
        (its ``INCLUDE``d columns), with each outgoing message's first attempt when ``chain`` is asked.

        A message's first attempt starts after it was created, nearly always within a day: the join reads
        the attempts started in ``[since, until + 1 day)`` from the index ``(organization_id, started_at)``
        (reading all those started since would read every later day too), and a message that found none
        there (a scheduled one, one without attempts) looks its first attempt up by ``(message_id, seq)``."""
        day = day_of(Message.created_at)
        if not kinds & {"delivered", "chain", "fell_back"}:
            only_states = self._own(
                select(day, Message.state, func.count())
                .where(Message.created_at >= span.since, Message.created_at < span.until)
                .group_by(day, Message.state),
                Message.organization_id,
            )
            rows = await self._rows(only_states)
            return Counter({("state", day_key(d), str(state), ""): int(n) for d, state, n in rows})
        later = aliased(Attempt)
        first_later = (
            select(later.outcome).where(later.message_id == Message.id, later.seq == 0).correlate(Message)
        ).scalar_subquery()
        chained = and_(Message.direction == Direction.OUTGOING, Message.servicechain_id.is_not(None))
        first = func.coalesce(Attempt.outcome, case((chained, first_later)))
        keys = (day, Message.state, Message.direction, Message.service, Message.servicechain_id, first)
        statement = self._own(
            select(*keys, func.count())
            .outerjoin(
                Attempt,
                and_(
                    Attempt.message_id == Message.id,
                    Attempt.seq == 0,
                    Attempt.organization_id == Message.organization_id,
                    Attempt.started_at >= span.since,
                    Attempt.started_at < span.until + ONE_DAY,
                ),
            )
            .where(Message.created_at >= span.since, Message.created_at < span.until)
            .group_by(*keys),
            Message.organization_id,
        )
        out: Tally = Counter()
        for d, state, direction, service, chain_id, outcome, n in await self._rows(statement):
            out["state", day_key(d), str(state), ""] += n
            if Direction(direction) != Direction.OUTGOING:
                continue
            if MessageState(state) in DELIVERED and service is not None:
                out["delivered", "", service, ""] += n
            if chain_id is not None and outcome is not None:  # a chain's message with a first attempt
                out["chain", "", str(chain_id), ""] += n
                out["fell_back", "", str(chain_id), ""] += n if AttemptOutcome(outcome) in FAILED_FIRST else 0
        return Counter({k: v for k, v in out.items() if k[0] in kinds and v})

    async def attempts(self, span: Span) -> Tally:
        statement = self._own(
            select(Attempt.service, Attempt.outcome, func.count())
            .where(Attempt.started_at >= span.since, Attempt.started_at < span.until)
            .group_by(Attempt.service, Attempt.outcome),
            Attempt.organization_id,
        )
        return Counter(
            {("attempt", "", service, AttemptOutcome(o).value): int(n) for service, o, n in await self._rows(statement)}
        )

    async def spent(self, span: Span) -> Tally:
        """Charged credits per day of ``sent_at``; for the instance, of the ``PAY_IN_ADVANCE`` organizations
        (one organization's are counted whatever its plan: the caller shows them only for that plan)."""
        day = day_of(Message.sent_at)
        statement = select(day, func.count()).where(
            Message.credit == CreditState.CHARGED, Message.sent_at >= span.since, Message.sent_at < span.until
        )
        if self.organization_id is None:
            statement = statement.join(Organization, Organization.id == Message.organization_id).where(
                Organization.plan == Plan.PAY_IN_ADVANCE
            )
        statement = self._own(statement.group_by(day), Message.organization_id)
        return Counter({("spent", day_key(d), "", ""): int(n) for d, n in await self._rows(statement)})

    async def changed_days(self, since: datetime, created_before: datetime) -> set[date]:
        """The days whose counts a message changed at or after ``since`` touches — its ``created_at``,
        ``sent_at`` and its attempts' ``started_at`` — among the messages created before
        ``created_before`` (one range of the index ``(organization_id, updated_at)``)."""
        days = (day_of(Message.created_at), day_of(Message.sent_at), day_of(Attempt.started_at))
        statement = self._own(
            select(*days)
            .distinct()
            .select_from(Message)
            .outerjoin(Attempt, Attempt.message_id == Message.id)
            # the messages changed since (a few), never those created before (nearly all of them)
            .where(Message.updated_at >= since, unindexed(Message.created_at) < created_before),
            Message.organization_id,
        )
        return {date.fromisoformat(day_key(d)) for row in await self._rows(statement) for d in row if d is not None}

    async def days_with_data(self, since: datetime | None, until: datetime) -> set[date]:
        """The days of ``[since, until)`` on which any count is not zero."""
        out: set[date] = set()
        for column, owner in (
            (Message.created_at, Message.organization_id),
            (Message.sent_at, Message.organization_id),
            (Attempt.started_at, Attempt.organization_id),
        ):
            day = day_of(column)
            statement = self._own(select(day).distinct().where(column < until), owner)
            if since is not None:
                statement = statement.where(column >= since)
            out |= {date.fromisoformat(day_key(d)) for (d,) in await self._rows(statement) if d is not None}
        return out
