"""The dashboard's counts per closed day, kept so that a window of 30 days reads ~30 small rows instead of
every message in it (decision 0032). It only reads messages: :mod:`app.messaging.state` stays their only
writer, and nothing on the accept or send path writes here (no hot counter row).

* :func:`roll_up` (a cron job every minute, :func:`roll_up_all`; or on demand) counts, for one
  organization, each closed UTC day with :class:`app.messaging.counts.Counts` — the very queries the
  live figures use — into :class:`StatsDay` rows, and records in :class:`StatsRollup` that the days
  before ``rolled_until`` are rolled up as the messages were at ``fresh_as_of``. A run recounts the days
  touched by the messages changed since the previous run's ``fresh_as_of`` (a late receipt) and, once a
  day, the day that closed and the :data:`RECHECK_DAYS` before it. An organization with nothing
  changed is skipped.
* :func:`covered_days` tells :mod:`app.messaging.stats` which days of a window it may read from the
  rollup: those before ``rolled_until``, less the days of any message changed since ``fresh_as_of`` (one
  range of the index ``(organization_id, updated_at)``), which are counted live — so the figures are
  exact between two runs too.

``fresh_as_of`` lies :data:`MARGIN` before the run: a change committed by a transaction that began
before the run (its ``updated_at`` is older than its commit) is still seen as a change.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta
from uuid import UUID

from sqlalchemy import ColumnElement, Select, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import utcnow
from app.logging import get_logger
from app.messaging.counts import ALL_KINDS, Counts, Span, Tally, start_of
from app.messaging.models import Message, StatsDay, StatsRollup
from app.tenants.models import Organization

log = get_logger(__name__)

MARGIN = timedelta(minutes=5)
#: the last closed days recounted by every run whatever changed (an attempt found undelivered after its
#: message moved on changes no message; so does a contact deleted with its messages)
RECHECK_DAYS = 2


async def covered_days(session: AsyncSession, organization_id: UUID, days: list[date]) -> frozenset[date]:
    """Which of ``days`` the rollup holds up to date for the organization."""
    state = await session.scalar(select(StatsRollup).where(StatsRollup.organization_id == organization_id))
    if state is None:
        return frozenset()
    rolled = {d for d in days if d < state.rolled_until}
    if not rolled:
        return frozenset()
    changed = await Counts(session, organization_id).changed_days(state.fresh_as_of, start_of(state.rolled_until))
    return frozenset(rolled - changed)


async def stored(
    session: AsyncSession, organization_id: UUID, days: frozenset[date], kinds: frozenset[str] = ALL_KINDS
) -> Tally:
    """The rolled-up counts of those days, in the shape of the live ones (``day`` kept)."""
    if not days:
        return Counter()
    statement = select(StatsDay.kind, StatsDay.day, StatsDay.key, StatsDay.subkey, StatsDay.count).where(
        StatsDay.organization_id == organization_id, StatsDay.day.in_(sorted(days)), StatsDay.kind.in_(sorted(kinds))
    )
    out: Tally = Counter()
    for kind, day, key, subkey, count in (await session.execute(statement)).all():
        out[kind, day.isoformat(), key, subkey] += count
    return out


async def roll_up(session: AsyncSession, organization_id: UUID, now: datetime | None = None) -> int:
    """Bring the organization's rollup up to ``now`` (default: the clock), in the session's transaction
    (the caller commits); the number of days counted."""
    fresh = (now or utcnow()) - MARGIN
    close = fresh.date()  # the days before it are over (and were over MARGIN ago)
    state = await session.scalar(
        select(StatsRollup).where(StatsRollup.organization_id == organization_id).with_for_update()
    )
    counts = Counts(session, organization_id)
    await counts.without_jit()
    stale = None
    if state is None:
        days = await counts.days_with_data(None, start_of(close))
    else:
        days = await counts.changed_days(state.fresh_as_of, start_of(state.rolled_until))
        if state.rolled_until < close:  # a new day closed: count it, and the last ones again
            stale = state.rolled_until - timedelta(days=RECHECK_DAYS)
            days |= await counts.days_with_data(start_of(stale), start_of(close))
    days = {d for d in days if d < close}
    gone: list[ColumnElement[bool]] = [StatsDay.day.in_(sorted(days))] if days else []
    if stale is not None:
        gone.append(StatsDay.day >= stale)
    if gone:
        await session.execute(delete(StatsDay).where(StatsDay.organization_id == organization_id, or_(*gone)))
    for day in sorted(days):
        tally = await counts.tally(Span.of_day(day))
        session.add_all(
            StatsDay(organization_id=organization_id, day=day, kind=kind, key=key, subkey=subkey, count=count)
            for (kind, _, key, subkey), count in tally.items()
        )
    if state is None:
        session.add(StatsRollup(organization_id=organization_id, rolled_until=close, fresh_as_of=fresh))
    else:
        state.rolled_until, state.fresh_as_of = max(close, state.rolled_until), max(fresh, state.fresh_as_of)
    await session.flush()
    return len(days)


def _due(close: date) -> Select[tuple[UUID]]:
    """The organizations whose rollup has work: none yet, a day closed since, or a message changed since
    (one step on the index ``(organization_id, updated_at)`` each)."""
    changed = (
        select(Message.id)
        .where(Message.organization_id == Organization.id, Message.updated_at >= StatsRollup.fresh_as_of)
        .exists()
    )
    return (
        select(Organization.id)
        .outerjoin(StatsRollup, StatsRollup.organization_id == Organization.id)
        .where(or_(StatsRollup.id.is_(None), StatsRollup.rolled_until < close, changed))
        .order_by(Organization.id)
    )


async def roll_up_all(sessions: async_sessionmaker[AsyncSession], now: datetime | None = None) -> dict[str, int]:
    """:func:`roll_up` for every organization that has work, each in its own short transaction; one that
    fails is logged and tried again by the next run."""
    now = now or utcnow()
    async with sessions() as session:
        ids = list(await session.scalars(_due((now - MARGIN).date())))
    done = days = failed = 0
    for organization_id in ids:
        async with sessions() as session:
            try:
                days += await roll_up(session, organization_id, now)
                await session.commit()
                done += 1
            except Exception as exc:  # another run holding it, or the organization just deleted
                await session.rollback()
                failed += 1
                log.warning("stats rollup failed", organization_id=str(organization_id), error=repr(exc))
    return {"organizations": done, "days": days, "failed": failed}
