"""Blast benchmark: one blast to N contacts through chain ``[log]`` vs bare SAQ no-op jobs/s, same run.

    uv run python bench/blast.py [-n 100000] [--workers 1] [--database-url URL] [--redis-url URL]

1. baseline: ``--noop-jobs`` (default min(N, 5,000)) no-op SAQ jobs processed by bare SAQ worker
   processes (the same Redis, the same number of processes and concurrency; bench/pipeline.py's);
2. blast: N contacts bulk-inserted in one category, ``POST /api/v1/blasts`` to a ``voluble run`` server,
   ``voluble workers run`` processes fan it out and send it; timed from the POST until every message is
   ``MSG_SENT``. The worker processes' resident memory is sampled (psutil) during the run.

Prints the POST latency, the time until all are sent, messages/s, no-op jobs/s, ``ratio: X.XX`` and the
workers' peak RSS. Default database: a fresh SQLite file; pass a PostgreSQL URL
(``postgresql+asyncpg://…``, a database you can drop) with ``--database-url``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import baseline, free_port, run_noop_worker, stop, wait_until  # noqa: E402


class RssSampler:
    """Peak resident memory of some processes and their children, sampled in a thread."""

    def __init__(self, pids: list[int], every: float = 0.25) -> None:
        self.pids = pids
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for pid in self.pids:
                try:
                    proc = psutil.Process(pid)
                    rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                except psutil.Error:
                    continue
                self.peak = max(self.peak, rss)
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def insert_contacts(sessions: Any, org_id: uuid.UUID, category_id: uuid.UUID, n: int) -> None:
    """``n`` contacts in ``category_id``, in multi-row INSERTs of 5,000."""
    from sqlalchemy import insert

    from app.contacts.models import Contact, contact_category

    now = datetime.now(UTC)
    for start in range(0, n, 5000):
        ids = [uuid.uuid4() for _ in range(min(5000, n - start))]
        async with sessions() as session:
            await session.execute(
                insert(Contact),
                [
                    {
                        "id": i,
                        "organization_id": org_id,
                        "first_name": f"F{start + k}",
                        "surname": "Bench",
                        "email": f"c{start + k}@example.com",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for k, i in enumerate(ids)
                ],
            )
            await session.execute(
                insert(contact_category), [{"contact_id": i, "category_id": category_id} for i in ids]
            )
            await session.commit()


async def _organization(sessions: Any, name: str) -> tuple[Any, str]:
    """A new organization and the token of its org admin."""
    from app.tenants.models import Organization, Role
    from app.tenants.services import AccountService, TokenService

    async with sessions() as session:
        org = Organization(name=f"{name} {uuid.uuid4().hex[:6]}")
        session.add(org)
        await session.flush()
        user = await AccountService(session=session).create(
            {
                "email": f"bench-{uuid.uuid4().hex[:6]}@example.com",
                "name": "Bench",
                "password": "bench password",
                "role": Role.ORG_ADMIN,
                "organization_id": org.id,
            }
        )
        _, token = await TokenService(session=session).create_personal(user, "bench", None, 1)
        await session.commit()
    return org, token


async def _single(client: Any, headers: dict[str, str], sent: Any) -> tuple[float, int]:
    """POST one message (a new contact, a chain [log]) and wait for MSG_SENT: (seconds, blast messages sent
    when it was)."""
    auth = {"headers": headers}
    contact = await client.post("/api/v1/contacts", json={"first_name": "Solo", "email": "solo@example.com"}, **auth)
    chain = await client.post("/api/v1/servicechains", json={"name": "solo", "services": ["log"]}, **auth)
    body = {"contact_id": contact.json()["id"], "content": "Just one", "servicechain_id": chain.json()["id"]}
    start = time.perf_counter()
    message = (await client.post("/api/v1/messages", json=body, **auth)).json()
    while (await client.get(f"/api/v1/messages/{message['id']}", **auth)).json()["state"] != "MSG_SENT":
        await asyncio.sleep(0.05)
    return time.perf_counter() - start, await sent()


async def blast(
    n: int, database_url: str, redis_url: str, workers: int, concurrency: int, var_dir: Path, post_only: bool = False
) -> tuple[float, float, int, dict[str, tuple[float, int]]]:
    """(POST latency, seconds until all sent, workers' peak RSS in bytes, single messages posted once a tenth
    of the blast is sent: ``{who: (seconds to MSG_SENT, blast messages sent then)}``); ``post_only``: no
    workers, the POST alone (what it costs without a worker fanning out beside it)."""
    import httpx
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from app import models as _models  # noqa: F401
    from app.config import Settings
    from app.contacts.models import Category
    from app.db.base import metadata
    from app.messaging.models import Message, MessageState
    from app.servicehost.registry import check_and_record, load_registry

    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    org, token = await _organization(sessions, "Bench")
    _, other_token = await _organization(sessions, "Other")
    async with sessions() as session:
        category = Category(organization_id=org.id, name="everyone")
        session.add(category)
        await session.commit()
    started = time.perf_counter()
    await insert_contacts(sessions, org.id, category.id, n)
    print(f"  {n} contacts inserted in {time.perf_counter() - started:.1f}s")
    port = free_port()
    env = {
        **os.environ,
        "VOLUBLE_DATABASE_URL": database_url,
        "VOLUBLE_REDIS_URL": redis_url,
        "VOLUBLE_QUEUE_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "VOLUBLE_VAR_DIR": str(var_dir),
        "VOLUBLE_SECRET_KEY": "bench-" + "k" * 40,
        "VOLUBLE_WORKER_CONCURRENCY": str(concurrency),
        "VOLUBLE_LOG_LEVEL": "WARNING",
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("VOLUBLE_")})
    await check_and_record(load_registry(Settings.from_env()), sessions)
    procs = [
        subprocess.Popen([sys.executable, "-m", "app", "workers", "run"], env=env, cwd=ROOT)
        for _ in range(0 if post_only else workers)
    ]
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(up, 60)
            chain = (await client.post("/api/v1/servicechains", json={"name": "bench", "services": ["log"]})).json()
            await asyncio.sleep(2.0)  # let the workers start
            body = {
                "name": "bench",
                "content": "Hi {{ first_name }}",
                "servicechain_id": chain["id"],
                "category_ids": [str(category.id)],
            }
            with RssSampler([p.pid for p in procs]) as rss:
                start = time.perf_counter()
                r = await client.post("/api/v1/blasts", json=body)
                posted = time.perf_counter() - start
                if r.status_code != 201:
                    raise SystemExit(f"POST /blasts answered {r.status_code}: {r.text}")
                if post_only:
                    return posted, 0.0, 0, {}

                async def sent() -> int:
                    async with sessions() as session:
                        return int(
                            await session.scalar(
                                select(func.count()).select_from(Message).where(Message.state == MessageState.SENT)
                            )
                            or 0
                        )

                async def done() -> bool:
                    return await sent() == n + len(probes)

                probes: dict[str, tuple[float, int]] = {}
                while await sent() < n // 10:
                    await asyncio.sleep(0.2)
                # fairness: single messages while the blast sends (they count among the sent above)
                probes["another organization"] = await _single(client, {"Authorization": f"Bearer {other_token}"}, sent)
                probes["the same organization"] = await _single(client, headers, sent)

                while not await done():  # a count of every message: not too often
                    await asyncio.sleep(0.5)
                elapsed = time.perf_counter() - start
    finally:
        stop([*procs, server])
        await engine.dispose()
    return posted, elapsed, rss.peak, probes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="contacts in the blast's audience")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in each phase")
    parser.add_argument("--concurrency", type=int, default=10, help="jobs per worker process and queue")
    parser.add_argument("--noop-jobs", type=int, default=None, help="no-op jobs of the baseline (min(N, 5000))")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--redis-url", default=os.environ.get("VOLUBLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--post-only", action="store_true", help="no workers: time the POST alone")
    parser.add_argument("--noop-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.noop_worker:
        run_noop_worker(args.redis_url, args.noop_worker, args.concurrency)
        return
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        print(f"n={args.n} workers={args.workers} concurrency={args.concurrency}")
        print(f"database={database_url.split('@')[-1]} redis={args.redis_url}")
        if args.post_only:
            posted, _, _, _ = asyncio.run(blast(args.n, database_url, args.redis_url, 0, 0, Path(tmp), post_only=True))
            print(f"POST /blasts:           {posted * 1000:8.0f} ms  (no worker running)")
            return
        noop_jobs = args.noop_jobs or min(args.n, 5_000)
        noop_rate = asyncio.run(baseline(noop_jobs, args.redis_url, args.workers, args.concurrency))
        print(f"bare SAQ no-op jobs:    {noop_rate:8.1f} jobs/s ({noop_jobs} jobs)")
        posted, elapsed, peak, probes = asyncio.run(
            blast(args.n, database_url, args.redis_url, args.workers, args.concurrency, Path(tmp))
        )
        rate = args.n / elapsed
        print(f"POST /blasts:           {posted * 1000:8.0f} ms")
        print(f"all MSG_SENT after:     {elapsed:8.1f} s")
        print(f"blast (log plugin):     {rate:8.1f} messages/s")
        print(f"ratio:                  {rate / noop_rate:8.2f}  (target >= 0.5)")
        print(f"workers' peak RSS:      {peak / 2**20:8.0f} MB  ({args.workers} process(es))")
        for who, (seconds, at) in probes.items():
            print(f"a single message of {who}: MSG_SENT in {seconds:.2f} s (blast {at}/{args.n} sent then)")


if __name__ == "__main__":
    main()
