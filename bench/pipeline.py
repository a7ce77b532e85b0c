"""Pipeline benchmark: messages/s through the whole pipeline vs bare SAQ no-op jobs/s, same run.

    uv run python bench/pipeline.py [-n 500] [--workers 1] [--database-url URL] [--redis-url URL]

Both phases use the same Redis and the same number of worker processes (same concurrency):

1. baseline: N no-op SAQ jobs enqueued, processed by bare SAQ worker processes;
2. pipeline: N messages POSTed over HTTP (``--clients`` at a time) to a ``voluble run`` server with a
   servicechain ``[log]``, processed by ``voluble workers run`` processes: accept (validate, template,
   credit, store), dispatch, the send job (plugin ``log``), the ``message-sent`` event applied by the
   coordinator. Timed from the first POST until every message is ``MSG_SENT``.

Prints both throughputs and their ratio. Default database: a fresh SQLite file; pass a PostgreSQL
URL (``postgresql+asyncpg://…``, a database you can drop) with ``--database-url``.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def noop(ctx: dict[str, Any]) -> None:
    return None


def run_noop_worker(redis_url: str, queue_name: str, concurrency: int) -> None:
    from saq import Queue, Worker

    async def main() -> None:
        worker = Worker(Queue.from_url(redis_url, name=queue_name), functions=[noop], concurrency=concurrency)
        await worker.start()

    asyncio.run(main())


async def wait_until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"timed out after {timeout}s")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


async def baseline(n: int, redis_url: str, workers: int, concurrency: int) -> float:
    from saq import Queue

    name = f"bench-noop-{uuid.uuid4().hex[:8]}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--noop-worker",
                name,
                "--redis-url",
                redis_url,
                "--concurrency",
                str(concurrency),
            ]
        )
        for _ in range(workers)
    ]
    queue = Queue.from_url(redis_url, name=name)
    await queue.connect()
    try:
        await asyncio.sleep(2.0)  # let the workers start
        start = time.perf_counter()
        jobs = [await queue.enqueue("noop", timeout=30, retries=1) for _ in range(n)]
        keys = [j.key for j in jobs if j is not None]

        async def done() -> bool:
            states = await queue.jobs(keys)
            return all(j is not None and j.status.value == "complete" for j in states)

        await wait_until(done, 300)
        elapsed = time.perf_counter() - start
    finally:
        stop(procs)
        await queue.disconnect()
    return n / elapsed


async def pipeline(
    n: int, database_url: str, redis_url: str, workers: int, concurrency: int, clients: int, var_dir: Path
) -> float:
    import httpx
    from sqlalchemy import func, select
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from app import models as _models  # noqa: F401
    from app.config import Settings
    from app.db.base import metadata
    from app.messaging.models import Message, MessageState
    from app.servicehost.registry import check_and_record, load_registry
    from app.tenants.models import Organization, Role
    from app.tenants.services import AccountService, TokenService

    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session:
        # one token posts every message: the organization gets an API budget above what the run sends (0034)
        org = Organization(name=f"Bench {uuid.uuid4().hex[:6]}", api_rate_limit=1_000_000)
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
        subprocess.Popen([sys.executable, "-m", "app", "workers", "run"], env=env, cwd=ROOT) for _ in range(workers)
    ]
    procs.append(
        subprocess.Popen(
            [sys.executable, "-m", "app", "run", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(var_dir / "web.log").open("wb"),
        )
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            try:
                await wait_until(up, 120)
            except SystemExit:
                print((var_dir / "web.log").read_text()[-3000:])
                raise
            chain = (await client.post("/api/v1/servicechains", json={"name": "bench", "services": ["log"]})).json()
            new_contact = {"first_name": "Ada", "email": "a@example.com"}
            contact = (await client.post("/api/v1/contacts", json=new_contact)).json()
            await asyncio.sleep(2.0)  # let the workers start
            body = {"contact_id": contact["id"], "servicechain_id": chain["id"], "content": "Hi {{ first_name }}"}
            gate = asyncio.Semaphore(clients)

            async def post_one() -> None:
                async with gate:
                    r = await client.post("/api/v1/messages", json=body)
                    if r.status_code != 201:
                        raise SystemExit(f"POST /messages answered {r.status_code}: {r.text}")

            web_cpu, workers_cpu = cpu_seconds(procs[-1:]), cpu_seconds(procs[:-1])
            start = time.perf_counter()
            await asyncio.gather(*(post_one() for _ in range(n)))
            accepted = time.perf_counter() - start

            async def done() -> bool:
                async with sessions() as session:
                    sent = await session.scalar(
                        select(func.count()).select_from(Message).where(Message.state == MessageState.SENT)
                    )
                return bool(sent == n)

            await wait_until(done, 600)
            elapsed = time.perf_counter() - start
            web_cpu, workers_cpu = cpu_seconds(procs[-1:]) - web_cpu, cpu_seconds(procs[:-1]) - workers_cpu
    finally:
        stop(procs)
        await engine.dispose()
    print(
        f"  {n} POST /messages accepted in {accepted:.2f}s ({n / accepted:.0f}/s, {clients} concurrent clients);"
        f" all MSG_SENT after {elapsed:.2f}s"
    )
    print(
        f"  CPU per message: web {web_cpu / n * 1000:.1f} ms ({web_cpu / elapsed:.0%} of a core),"
        f" workers {workers_cpu / n * 1000:.1f} ms ({workers_cpu / elapsed:.0%})"
    )
    return n / elapsed


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU seconds of ``procs`` and their children so far: the figure a noisy machine
    disturbs least (throughput moves with whatever else runs; the CPU a message costs hardly does)."""
    import psutil

    total = 0.0
    for proc in procs:
        parent = psutil.Process(proc.pid)
        for part in (parent, *parent.children(recursive=True)):
            try:
                times = part.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=500, help="messages (and no-op jobs) to run")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in each phase")
    parser.add_argument("--concurrency", type=int, default=10, help="jobs per worker process")
    parser.add_argument("--clients", type=int, default=10, help="concurrent HTTP clients posting messages")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--redis-url", default=os.environ.get("VOLUBLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--noop-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.noop_worker:
        run_noop_worker(args.redis_url, args.noop_worker, args.concurrency)
        return
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        print(f"n={args.n} workers={args.workers} concurrency={args.concurrency}")
        print(f"database={database_url.split('@')[-1]} redis={args.redis_url}")
        noop_rate = asyncio.run(baseline(args.n, args.redis_url, args.workers, args.concurrency))
        print(f"bare SAQ no-op jobs:    {noop_rate:8.1f} jobs/s")
        rate = asyncio.run(
            pipeline(args.n, database_url, args.redis_url, args.workers, args.concurrency, args.clients, Path(tmp))
        )
        print(f"pipeline (log plugin):  {rate:8.1f} messages/s")
        print(f"ratio:                  {rate / noop_rate:8.2f}  (target >= 0.5)")


if __name__ == "__main__":
    main()
