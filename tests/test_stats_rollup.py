"""The rollup of the dashboard's counts (decision 0032): once an organization's closed days are rolled up,
every figure still equals what the test counts itself over the rows it wrote (tests/test_stats.py), for
the default window and one that starts and ends inside days; a message of a rolled-up day that changes
state later (a late receipt, through ``app.messaging.state``) is counted right at once, and the next
run brings its day's rows up to date; the cron job rolls up only the organizations that have work."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import utcnow
from app.messaging import state
from app.messaging.jobs import roll_up_stats
from app.messaging.models import MessageState, StatsDay, StatsRollup
from app.messaging.rollup import MARGIN, covered_days, roll_up
from app.messaging.stats import Stats, Window
from tests.conftest import World
from tests.test_stats import Built, build, expected, figures_of

S = MessageState


def without_replies(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if k != "replies"}


async def figures(sessions: async_sessionmaker[AsyncSession], built: Built, window: Window) -> dict[str, Any]:
    async with sessions() as session:
        return without_replies(figures_of(await Stats(session=session, organization_id=built.org.id).figures(window)))


async def rolled(sessions: async_sessionmaker[AsyncSession], built: Built) -> int:
    async with sessions() as session:
        days = await roll_up(session, built.org.id)
        await session.commit()
        return days


async def stored_states(sessions: async_sessionmaker[AsyncSession], built: Built) -> dict[str, dict[str, int]]:
    """The rollup's own rows of messages per day and state."""
    async with sessions() as session:
        rows = await session.execute(
            select(StatsDay.day, StatsDay.key, StatsDay.count).where(
                StatsDay.organization_id == built.org.id, StatsDay.kind == "state"
            )
        )
        out: dict[str, Counter[str]] = {}
        for day, key, count in rows:
            out.setdefault(day.isoformat(), Counter())[key] += count
        return {d: dict(c) for d, c in out.items()}


def closed_day() -> str:
    return (utcnow() - MARGIN).date().isoformat()


async def test_rolled_up_days_give_the_same_figures(sessions: async_sessionmaker[AsyncSession], world: World) -> None:
    built = await build(sessions, world, seed=11)
    other = await build(sessions, world, seed=12, count=25)  # not rolled up: counted live, alone
    assert await rolled(sessions, built) >= 10
    window = Window.parse()
    async with sessions() as session:
        covered = await covered_days(session, built.org.id, window.span.full_days())
    assert len(covered) >= 25  # the closed days of the window are read from the rollup
    assert await figures(sessions, built, window) == without_replies(expected(built.rows, window))
    assert await figures(sessions, other, window) == without_replies(expected(other.rows, window))
    # a window that starts and ends inside days: its edges are counted live, the days between stored
    until = utcnow() - timedelta(days=2, hours=5, minutes=7)
    odd = Window(until - timedelta(days=8, hours=3), until)
    assert await figures(sessions, built, odd) == without_replies(expected(built.rows, odd))
    # the rollup's rows are the counts of the rows written, day by day, up to the last closed day
    want = expected(built.rows, Window(utcnow() - timedelta(days=60), utcnow()))["per_day"]
    assert await stored_states(sessions, built) == {d: c for d, c in want.items() if d < closed_day()}


async def test_a_late_change_of_a_rolled_up_day(sessions: async_sessionmaker[AsyncSession], world: World) -> None:
    built = await build(sessions, world, seed=13)
    await rolled(sessions, built)
    two_days_ago = (utcnow() - timedelta(days=2)).date()
    late = next(
        i
        for i, row in enumerate(built.rows)
        if row.state == S.SENT and row.created_at.date() <= two_days_ago and row.service
    )
    day = built.rows[late].created_at.date().isoformat()
    window = Window.parse()
    before = await figures(sessions, built, window)
    async with sessions() as session:  # the receipt: the message was delivered to the user
        assert await state.move(session, built.ids[late], S.DELIVERED_USER)
        await session.commit()
    built.rows[late].state = S.DELIVERED_USER
    want = without_replies(expected(built.rows, window))
    # counted right at once, the rollup not run again: its day is counted live
    after = await figures(sessions, built, window)
    assert after == want and after != before
    assert (
        after["per_day"][day].get(str(S.DELIVERED_USER), 0) == before["per_day"][day].get(str(S.DELIVERED_USER), 0) + 1
    )
    # the next run counts that day again: its stored rows hold the change
    assert await rolled(sessions, built) >= 1
    assert (await stored_states(sessions, built))[day] == want["per_day"][day]
    assert await figures(sessions, built, window) == want


async def test_the_cron_job_rolls_up_the_organizations_with_work(
    sessions: async_sessionmaker[AsyncSession], world: World
) -> None:
    built = await build(sessions, world, seed=14, count=30)

    async def mark() -> Any:
        async with sessions() as session:
            rollup = await session.scalar(select(StatsRollup).where(StatsRollup.organization_id == built.org.id))
            return None if rollup is None else (rollup.rolled_until, rollup.fresh_as_of)

    ctx: Any = {"sessions": sessions}
    assert await mark() is None
    first = await roll_up_stats(ctx)
    assert first["failed"] == 0 and await mark() is not None
    assert (await mark())[0].isoformat() == closed_day()
    window = Window.parse()
    assert await figures(sessions, built, window) == without_replies(expected(built.rows, window))
    # nothing changed: the organization is skipped (its rollup untouched)
    unchanged = await mark()
    await roll_up_stats(ctx)
    assert await mark() == unchanged
    # a message changed: the next run takes it up
    moved = next(i for i, row in enumerate(built.rows) if row.state == S.SENT)
    async with sessions() as session:
        assert await state.move(session, built.ids[moved], S.READ)
        await session.commit()
    built.rows[moved].state = S.READ
    await roll_up_stats(ctx)
    assert (await mark())[1] > unchanged[1]
    assert await figures(sessions, built, window) == without_replies(expected(built.rows, window))
