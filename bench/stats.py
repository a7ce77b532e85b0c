"""Stats benchmark: the dashboard's figures (``GET /api/v1/stats``, 30 days) over 1,000,000 messages on PostgreSQL.

    uv run python bench/stats.py [-n 1000000] [--days 60] [--runs 5] [--database-url URL] [--reuse] [--explain]

Creates a fresh database (``voluble_h4_bench`` on the server of ``--database-url``, dropped first),
the schema from the models (with the indexes of migration 0008), one ``PAY_IN_ADVANCE`` organization
with ``-n`` messages spread over the last ``--days`` days in every state, one attempt each (a fifth of
them a second one, the fallback), written with ``COPY``; ``VACUUM ANALYZE``; then times
:meth:`app.messaging.stats.Stats.figures` for the last 30 days, ``--runs`` times (best and median):

* the **baseline**: without a rollup, every message of the window counted live (the code before 0032);
* the rollup of the closed days made (:func:`app.messaging.rollup.roll_up`: the first run and a cron run
  after it, timed), then the figures again — they must equal the baseline's;
* after a late receipt (a message of ten days ago moved to ``MSG_DELIVERED_USER``): its day counted live.

``--explain`` prints the plans of the two biggest live queries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = "voluble_h4_bench"
STATES = ["MSG_SENT", "MSG_DELIVERED_SERVICE", "MSG_DELIVERED_USER", "MSG_READ", "MSG_FAILED", "MSG_RECEIVED"]


async def prepare(server_url: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(server_url)
    await conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
    await conn.execute(f"CREATE DATABASE {DB_NAME}")
    await conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{DB_NAME}"


MESSAGE_COLUMNS = [
    "id", "organization_id", "contact_id", "servicechain_id", "direction", "state", "service", "route",
    "content", "sent_at", "credit", "created_at", "updated_at",
]  # fmt: skip
ATTEMPT_COLUMNS = [
    "id", "organization_id", "message_id", "seq", "service", "outcome", "started_at", "created_at", "updated_at",
]  # fmt: skip


def batches(
    org: uuid.UUID, contact: uuid.UUID, chain: uuid.UUID, n: int, days: int, now: datetime
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """The messages and attempts, 100,000 messages at a time (the same ones for the same ``n`` and ``days``)."""
    rng = random.Random(1)
    span = days * 86400
    batch = 100_000
    route = json.dumps(["sms_a", "sms_b"])
    for start in range(0, n, batch):
        messages, attempts = [], []
        for _ in range(min(batch, n - start)):
            mid = uuid.uuid4()
            created = now - timedelta(seconds=rng.randrange(span))
            state = rng.choice(STATES)
            incoming = state == "MSG_RECEIVED"
            fell_back = not incoming and rng.random() < 0.2
            service = "tg" if incoming else ("sms_b" if fell_back else "sms_a")
            charged = state not in ("MSG_FAILED", "MSG_RECEIVED")
            messages.append(
                (
                    mid,
                    org,
                    contact,
                    None if incoming else chain,
                    "incoming" if incoming else "outgoing",
                    state,
                    service,
                    "[]" if incoming else route,
                    "hello",
                    created + timedelta(seconds=1) if charged else None,
                    "charged" if charged else ("none" if incoming else "released"),
                    created,
                    created,
                )
            )
            if not incoming:
                first = "failed" if fell_back else ("failed" if state == "MSG_FAILED" else "sent")
                attempts.append((uuid.uuid4(), org, mid, 0, "sms_a", first, created, created, created))
                if fell_back:
                    attempts.append((uuid.uuid4(), org, mid, 1, "sms_b", "sent", created, created, created))
        yield messages, attempts


async def load(dsn: str, n: int, days: int) -> uuid.UUID:
    import asyncpg
    from sqlalchemy.ext.asyncio import create_async_engine

    import app.models  # noqa: F401  (every table)
    from app.db.base import metadata

    engine = create_async_engine(sa_url(dsn))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await engine.dispose()

    conn = await asyncpg.connect(dsn)
    now = datetime.now(UTC)
    org, contact, chain = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO organization (id, name, plan, credits, credits_reserved, suspended, created_at, updated_at)"
        " VALUES ($1, 'Bench', 'PAY_IN_ADVANCE', 1000000, 10, false, $2, $2)",
        org,
        now,
    )
    await conn.execute(
        "INSERT INTO contact (id, organization_id, first_name, opted_out, is_unknown, created_at, updated_at)"
        " VALUES ($1, $2, 'Ann', false, false, $3, $3)",
        contact,
        org,
        now,
    )
    await conn.execute(
        "INSERT INTO servicechain (id, organization_id, name, description, services, created_at, updated_at)"
        " VALUES ($1, $2, 'Fast', '', '[\"sms_a\", \"sms_b\"]', $3, $3)",
        chain,
        org,
        now,
    )
    loaded = 0
    for messages, attempts in batches(org, contact, chain, n, days, now):
        await conn.copy_records_to_table("message", records=messages, columns=MESSAGE_COLUMNS)
        await conn.copy_records_to_table("message_attempt", records=attempts, columns=ATTEMPT_COLUMNS)
        loaded += len(messages)
        print(f"  {loaded:>9,} messages", flush=True)
    await conn.execute("VACUUM ANALYZE")  # as autovacuum would: the visibility map lets counts read the index alone
    await conn.close()
    return org


async def measure(dsn: str, org: uuid.UUID, runs: int, window: Any, title: str) -> tuple[list[float], Any]:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from app.messaging.stats import Stats

    engine = create_async_engine(sa_url(dsn))
    times = []
    async with AsyncSession(engine) as session:
        for _ in range(runs + 1):  # the first run warms the caches and is not counted
            started = time.perf_counter()
            figures = await Stats(session=session, organization_id=org).figures(window)
            times.append((time.perf_counter() - started) * 1000)
    await engine.dispose()
    times = times[1:]
    print(
        f"  {title}: best {min(times):.0f} ms, median {statistics.median(times):.0f} ms"
        f" ({figures.total:,} messages counted, {len(figures.services)} services)"
    )
    return times, figures


async def roll_up(dsn: str, org: uuid.UUID, title: str) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from app.messaging.rollup import roll_up

    engine = create_async_engine(sa_url(dsn))
    async with AsyncSession(engine) as session:
        started = time.perf_counter()
        days = await roll_up(session, org)
        await session.commit()
        print(f"  {title}: {days} days counted in {(time.perf_counter() - started) * 1000:.0f} ms")
    await engine.dispose()


async def late_receipt(dsn: str, org: uuid.UUID) -> None:
    """A message of ten days ago is delivered now (a late receipt): its day is counted live again."""
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from app.messaging import state
    from app.messaging.models import Message, MessageState

    engine = create_async_engine(sa_url(dsn))
    async with AsyncSession(engine) as session:
        ten_days_ago = datetime.now(UTC) - timedelta(days=10)
        message_id = await session.scalar(
            select(Message.id)
            .where(Message.organization_id == org, Message.state == MessageState.SENT)
            .where(Message.created_at < ten_days_ago)
            .order_by(Message.created_at.desc())
            .limit(1)
        )
        assert message_id is not None and await state.move(session, message_id, MessageState.DELIVERED_USER)
        await session.commit()
    await engine.dispose()


def same(a: Any, b: Any) -> bool:
    return (a.per_day, a.services, a.chains, a.credits) == (b.per_day, b.services, b.chains, b.credits)


async def explain(dsn: str, org: uuid.UUID) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    since = datetime.now(UTC) - timedelta(days=30)
    for title, sql in (
        (
            "per day",
            "SELECT date_trunc('day', created_at AT TIME ZONE 'UTC') d, state, count(*) FROM message"
            " WHERE organization_id = $1 AND created_at >= $2 GROUP BY 1, 2",
        ),
        (
            "attempts per service",
            "SELECT service, outcome, count(*) FROM message_attempt WHERE organization_id = $1 AND started_at >= $2"
            " GROUP BY 1, 2",
        ),
    ):
        plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS OFF) {sql}", org, since)
        print(f"\n-- {title}")
        for row in plan:
            print("  " + row[0])
    await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--explain", action="store_true", help="print the plans of the two biggest live queries")
    parser.add_argument("--sqlite", type=Path, help="a SQLite database file to use instead of PostgreSQL")
    parser.add_argument("--reuse", action="store_true", help=f"measure the {DB_NAME} of an earlier run again")
    args = parser.parse_args()
    server = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    if args.sqlite and args.reuse:
        dsn, org, args.n = await sqlite_again(args.sqlite)
    elif args.sqlite:
        print(f"loading {args.n:,} messages over {args.days} days into {args.sqlite} ...")
        started = time.perf_counter()
        dsn, org = await load_sqlite(args.sqlite, args.n, args.days)
        print(f"  loaded in {time.perf_counter() - started:.0f} s")
    elif args.reuse:
        import asyncpg

        dsn = server.rsplit("/", 1)[0] + f"/{DB_NAME}"
        conn = await asyncpg.connect(dsn)
        org = await conn.fetchval("SELECT id FROM organization LIMIT 1")
        args.n = await conn.fetchval("SELECT count(*) FROM message")
        await conn.close()
    else:
        dsn = await prepare(server)
        print(f"loading {args.n:,} messages over {args.days} days into {DB_NAME} ...")
        started = time.perf_counter()
        org = await load(dsn, args.n, args.days)
        print(f"  loaded in {time.perf_counter() - started:.0f} s")
    from app.messaging.stats import Window

    await reset_rollup(dsn, org)
    window = Window.parse()
    print(f"stats for 30 days over {args.n:,} messages:")
    baseline, live = await measure(dsn, org, args.runs, window, "baseline, every message counted live (before)")
    await roll_up(dsn, org, "first rollup of the whole history")
    await roll_up(dsn, org, "a cron run after it")
    times, rolled = await measure(dsn, org, args.runs, window, "with the rollup of closed days")
    assert same(live, rolled), "the rollup changed a figure"
    await late_receipt(dsn, org)
    late, _ = await measure(dsn, org, args.runs, window, "after a late receipt on a rolled-up day")
    await roll_up(dsn, org, "the next cron run")
    if args.explain and not args.sqlite:
        await explain(dsn, org)
    best, median = min(times), statistics.median(times)
    print(
        f"\nstats for 30 days over {args.n:,} messages: best {best:.0f} ms, median {median:.0f} ms"
        f" (baseline {min(baseline):.0f} / {statistics.median(baseline):.0f} ms:"
        f" {statistics.median(baseline) / median:.1f}x faster; after a late receipt {statistics.median(late):.0f} ms)"
    )


async def reset_rollup(dsn: str, org: uuid.UUID) -> None:
    """The rollup's tables (an older run's database may lack them), emptied: the baseline counts live."""
    from sqlalchemy import delete
    from sqlalchemy.ext.asyncio import create_async_engine

    import app.models  # noqa: F401  (every table)
    from app.db.base import metadata
    from app.messaging.models import StatsDay, StatsRollup

    engine = create_async_engine(sa_url(dsn))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(delete(StatsDay).where(StatsDay.organization_id == org))
        await conn.execute(delete(StatsRollup).where(StatsRollup.organization_id == org))
    await engine.dispose()


def sa_url(dsn: str) -> str:
    return dsn if dsn.startswith("sqlite") else dsn.replace("postgresql://", "postgresql+asyncpg://")


async def load_sqlite(path: Path, n: int, days: int) -> tuple[str, uuid.UUID]:
    """The same rows in a new SQLite database (the app's own engine settings: WAL and the rest)."""
    from sqlalchemy import insert, text
    from sqlalchemy.ext.asyncio import create_async_engine

    import app.models  # noqa: F401  (every table)
    from app.contacts.models import Contact
    from app.db.base import metadata
    from app.messaging.models import Attempt, Message, Servicechain
    from app.tenants.models import Organization, Plan

    for old in path.parent.glob(path.name + "*"):
        old.unlink()
    dsn = f"sqlite+aiosqlite:///{path}"
    engine = create_async_engine(dsn)
    now = datetime.now(UTC)
    org, contact, chain = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(
            insert(Organization),
            [dict(id=org, name="Bench", plan=Plan.PAY_IN_ADVANCE, credits=1_000_000, credits_reserved=10)],
        )
        await conn.execute(insert(Contact), [dict(id=contact, organization_id=org, first_name="Ann")])
        await conn.execute(
            insert(Servicechain), [dict(id=chain, organization_id=org, name="Fast", services=["sms_a", "sms_b"])]
        )
    loaded = 0
    for messages, attempts in batches(org, contact, chain, n, days, now):
        async with engine.begin() as conn:
            rows = [dict(zip(MESSAGE_COLUMNS, m, strict=True)) for m in messages]
            for row in rows:
                row["route"] = json.loads(row["route"])
            await conn.execute(insert(Message), rows)
            await conn.execute(insert(Attempt), [dict(zip(ATTEMPT_COLUMNS, a, strict=True)) for a in attempts])
        loaded += len(messages)
        print(f"  {loaded:>9,} messages", flush=True)
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))
    await engine.dispose()
    return dsn, org


async def sqlite_again(path: Path) -> tuple[str, uuid.UUID, int]:
    from sqlalchemy import select, text
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.tenants.models import Organization

    dsn = f"sqlite+aiosqlite:///{path}"
    engine = create_async_engine(dsn)
    async with engine.connect() as conn:
        org = (await conn.execute(select(Organization.id).limit(1))).scalar_one()
        n = (await conn.execute(text("SELECT count(*) FROM message"))).scalar_one()
    await engine.dispose()
    return dsn, org, int(n)


if __name__ == "__main__":
    asyncio.run(main())
