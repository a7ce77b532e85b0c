"""Scale-out benchmark: W web processes and M worker processes on PostgreSQL and Redis.

    uv run python bench/scale.py [-n 300] [--web 1,2] [--workers 1,2,4] [--postgres-url URL] [--redis-url URL]

For each M it first measures bare SAQ no-op jobs/s with M worker processes (bench/pipeline.py's
baseline), then for each W: a fresh organization (its admin, its default chain ``[log]``), W ``voluble
run`` processes on their own ports and M ``voluble workers run`` processes; ``-n`` messages POSTed
(``--clients`` at a time, spread over the web processes as a load balancer would), timed from the first
POST until every one is ``MSG_SENT``. Each cell checks that nothing was sent twice: one successful
attempt per message, each message id once in the ``log`` outbox (the cell's own data directory).

Each cell has a fresh database (``voluble_scale_<random>``, dropped after it) on the server of
``--postgres-url``, and its own queue prefix on the Redis of ``--redis-url``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline import baseline, free_port, stop, wait_until  # noqa: E402  (bench/pipeline.py)

PASSWORD = "scale bench password"


async def create_database(server_url: str) -> str:
    import asyncpg

    name = f"voluble_scale_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(server_url: str, url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


def cell_env(database_url: str, redis_url: str, var_dir: Path, concurrency: int) -> dict[str, str]:
    return {
        **os.environ,
        "VOLUBLE_DATABASE_URL": database_url,
        "VOLUBLE_REDIS_URL": redis_url,
        "VOLUBLE_QUEUE_PREFIX": f"scale-{uuid.uuid4().hex[:8]}",
        "VOLUBLE_VAR_DIR": str(var_dir),
        "VOLUBLE_SECRET_KEY": "scale-" + "k" * 40,
        "VOLUBLE_WORKER_CONCURRENCY": str(concurrency),
        "VOLUBLE_LOG_LEVEL": "WARNING",
    }


async def organization(env: dict[str, str]) -> tuple[str, str]:
    """A fresh organization with its admin and its default chain ``[log]`` (what ``voluble up`` creates for
    its demo), and a token of that admin; (organization id, token)."""
    from sqlalchemy import select

    from app.cli import _create_demo_organization, _create_token, _sessions
    from app.config import Settings
    from app.tenants.models import User

    os.environ.update({k: v for k, v in env.items() if k.startswith("VOLUBLE_")})
    settings = Settings.from_env()
    email = f"scale-{uuid.uuid4().hex[:8]}@example.com"
    await _create_demo_organization(settings, email, PASSWORD)
    token = await _create_token(settings, email, None, "scale", 1)
    engine, sessions = _sessions(settings)
    try:
        async with sessions() as session:
            org_id = await session.scalar(select(User.organization_id).where(User.email == email))
    finally:
        await engine.dispose()
    return str(org_id), token


async def cell(
    n: int, webs: int, workers: int, database_url: str, redis_url: str, concurrency: int, clients: int
) -> dict[str, Any]:
    import httpx
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from app.messaging.models import Attempt, AttemptOutcome, Message, MessageState
    from app.plugins.log import outbox_path

    with tempfile.TemporaryDirectory() as tmp:
        var_dir = Path(tmp)
        env = cell_env(database_url, redis_url, var_dir, concurrency)
        org_id, token = await organization(env)
        ports = [free_port() for _ in range(webs)]
        app = [sys.executable, "-m", "app"]
        quiet: dict[str, Any] = {"env": env, "cwd": ROOT, "stdout": subprocess.DEVNULL}
        silent = {**quiet, "stderr": subprocess.DEVNULL}  # uvicorn's access log
        procs = [subprocess.Popen([*app, "workers", "run"], **quiet) for _ in range(workers)]
        procs += [subprocess.Popen([*app, "run", "--host", "127.0.0.1", "--port", str(p)], **silent) for p in ports]
        engine = create_async_engine(database_url)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        headers = {"Authorization": f"Bearer {token}"}
        limits = httpx.Limits(max_connections=clients)
        web_clients = [
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", headers=headers, timeout=120, limits=limits)
            for p in ports
        ]
        try:
            for c in web_clients:

                async def ready(c: httpx.AsyncClient = c) -> bool:
                    try:
                        return (await c.get("/ready")).status_code == 200
                    except httpx.TransportError:
                        return False

                await wait_until(ready, 120)
            contact = (await web_clients[0].post("/api/v1/contacts", json={"first_name": "Ada"})).json()
            await asyncio.sleep(2.0)  # let the workers start
            body = {"contact_id": contact["id"], "content": "Hi {{ first_name }}"}
            gate = asyncio.Semaphore(clients)

            async def post_one(i: int) -> None:
                async with gate:
                    r = await web_clients[i % webs].post("/api/v1/messages", json=body)
                    if r.status_code != 201:
                        raise SystemExit(f"POST /messages answered {r.status_code}: {r.text}")

            start = time.perf_counter()
            await asyncio.gather(*(post_one(i) for i in range(n)))
            accepted = time.perf_counter() - start
            of_org = Message.organization_id == uuid.UUID(org_id)

            async def done() -> bool:
                async with sessions() as session:
                    sent = await session.scalar(
                        select(func.count()).select_from(Message).where(of_org, Message.state == MessageState.SENT)
                    )
                return bool(sent == n)

            await wait_until(done, 900)
            elapsed = time.perf_counter() - start
            async with sessions() as session:
                ids = set(await session.scalars(select(Message.id).where(of_org)))
                successes = collections.Counter(
                    await session.scalars(
                        select(Attempt.message_id).where(
                            Attempt.organization_id == uuid.UUID(org_id), Attempt.outcome == AttemptOutcome.SENT
                        )
                    )
                )
            lines = outbox_path(var_dir).read_text().splitlines()
            outbox = collections.Counter(uuid.UUID(json.loads(line)["message_id"]) for line in lines)
        finally:
            for c in web_clients:
                await c.aclose()
            stop(procs)
            await engine.dispose()
    doubles = sum(1 for i in ids if successes[i] != 1 or outbox[i] != 1) + len(set(outbox) - ids)
    return {"accept": n / accepted, "rate": n / elapsed, "doubles": doubles, "messages": len(ids)}


def as_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


async def fresh_database(server_url: str, redis_url: str) -> str:
    """A new database with the schema and the plugins' recorded statuses, for one cell."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from app import models as _models  # noqa: F401
    from app.config import Settings
    from app.db.base import metadata
    from app.servicehost.registry import check_and_record, load_registry

    database_url = await create_database(server_url)
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(cell_env(database_url, redis_url, Path(tmp), 1))
        await check_and_record(load_registry(Settings.from_env()), async_sessionmaker(engine))
    await engine.dispose()
    return database_url


async def run(args: argparse.Namespace) -> None:
    print(f"n={args.n} concurrency={args.concurrency} clients={args.clients} redis={args.redis_url}")
    print(f"database: a fresh one per cell on {args.postgres_url.split('@')[-1].rsplit('/', 1)[0]}")
    columns = ("accepted/s", "messages/s", "no-op jobs/s", "ratio", "doubles")
    print(f"{'W':>2} {'M':>2} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, (11, 11, 13, 6, 8), strict=True)))
    doubles = 0
    for m in as_list(args.workers):
        noop = await baseline(args.n, args.redis_url, m, args.concurrency)
        for w in as_list(args.web):
            database_url = await fresh_database(args.postgres_url, args.redis_url)
            try:
                result = await cell(args.n, w, m, database_url, args.redis_url, args.concurrency, args.clients)
            finally:
                await drop_database(args.postgres_url, database_url)
            doubles += result["doubles"]
            print(
                f"{w:>2} {m:>2} {result['accept']:>11.1f} {result['rate']:>11.1f} {noop:>13.1f}"
                f" {result['rate'] / noop:>6.2f} {result['doubles']:>8}",
                flush=True,
            )
    if doubles:
        raise SystemExit("double sends: see the doubles column")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=300, help="messages (and no-op jobs) per cell")
    parser.add_argument("--web", default="1,2", help="web process counts W, comma-separated")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts M, comma-separated")
    parser.add_argument("--concurrency", type=int, default=10, help="jobs per queue in each worker process")
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients posting messages")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("VOLUBLE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server (any database on it) where a fresh database is created and dropped",
    )
    parser.add_argument("--redis-url", default=os.environ.get("VOLUBLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
