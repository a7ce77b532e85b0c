"""API benchmark: ``voluble run`` against a bare Litestar app answering the same JSON from memory, same run.

    uv run python bench/api.py [--database-url URL] [--clients 32] [--seconds 5] [--scenarios list,me]
                               [--profile DIR]

Seeds one organization (an org admin, a personal token, ``--contacts`` contacts in two categories each),
starts ``voluble run`` (one process) and a bare Litestar app (one process, the same ``litestar run``, so
the same uvicorn settings) whose handlers return the very rows the API answered, decoded once into the
API's own msgspec structs and encoded on each request. Then, for each scenario, ``--clients`` keep-alive
connections send requests for ``--seconds`` (after a one-second warm-up) and it prints req/s, p50 and p99
for both and the ratio:

* ``list``: ``GET /api/v1/contacts?limit=50`` (bare: the same page from memory);
* ``me``: ``GET /api/v1/me`` (bare: the same body from memory);
* ``post``: ``POST /api/v1/messages`` with no worker running (sending waits; bare: a 201 from memory).

The load generator is a small raw HTTP/1.1 client (httpx alone cannot load a server faster than a few
hundred requests a second); it runs in this process, beside both servers, on the same cores.
``--profile DIR`` also samples the Voluble server with ``py-spy record`` during each scenario and
writes ``DIR/<scenario>.txt`` (collapsed stacks), printing the heaviest frames.

Default database: a fresh SQLite file; ``--database-url postgresql+asyncpg://…`` creates (and drops) a
database ``voluble_bench_api_<pid>`` on that server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import free_port, stop, wait_until  # noqa: E402

#: one per run: two benchmarks on the same server do not drop each other's database
DB_NAME = f"voluble_bench_api_{os.getpid()}"
SCENARIOS = {
    "list": ("GET", "/api/v1/contacts?limit=50"),
    "me": ("GET", "/api/v1/me"),
    "post": ("POST", "/api/v1/messages"),
}


# ---------------------------------------------------------------- the bare app (run by ``litestar run``)


def bare_app() -> Any:
    """A Litestar app with no database, no middleware: the recorded answers, encoded on each request."""
    import msgspec
    from litestar import Litestar, Response, get, post

    from app.contacts.schemas import Contact

    recorded = json.loads(Path(os.environ["BENCH_RECORDED"]).read_text())
    page = {**recorded["list"], "items": msgspec.convert(recorded["list"]["items"], list[Contact])}
    me, created = recorded["me"], recorded["post"]

    @get("/api/v1/contacts", sync_to_thread=False)
    def contacts() -> dict[str, Any]:
        return page

    @get("/api/v1/me", sync_to_thread=False)
    def who() -> dict[str, Any]:
        return me

    @post("/api/v1/messages", sync_to_thread=False)
    def send() -> Response[dict[str, Any]]:
        return Response(created, status_code=201)

    @get("/ready", sync_to_thread=False)
    def ready() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar([contacts, who, send, ready], signature_namespace={"Response": Response})


# ---------------------------------------------------------------- load


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0
    cpu: float = 0.0

    @property
    def cpu_ms(self) -> float:
        """Server CPU milliseconds per answered request."""
        return 1000 * self.cpu / len(self.latencies) if self.latencies else float("nan")

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def one_connection(port: int, raw: bytes, until: float, measure_from: float, run: Run) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while (now := time.perf_counter()) < until:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            if now >= measure_from:
                run.latencies.append(time.perf_counter() - now)
                run.statuses[status] += 1
    finally:
        writer.close()


async def hammer(port: int, raw: bytes, clients: int, seconds: float, pid: int, warmup: float = 1.0) -> Run:
    """``clients`` connections for ``seconds`` (after ``warmup``); also the server's CPU time meanwhile
    (user + system of process ``pid``): the figure the machine's other load disturbs least."""
    import psutil

    run = Run()
    start = time.perf_counter()
    measure_from, until = start + warmup, start + warmup + seconds
    server = psutil.Process(pid)

    async def cpu_at(moment: float) -> float:
        await asyncio.sleep(max(0.0, moment - time.perf_counter()))
        times = server.cpu_times()
        return float(times.user + times.system)

    cpu = asyncio.gather(cpu_at(measure_from), cpu_at(until))
    await asyncio.gather(*(one_connection(port, raw, until, measure_from, run) for _ in range(clients)))
    run.seconds = time.perf_counter() - measure_from
    before, after = await cpu
    run.cpu = after - before
    return run


# ---------------------------------------------------------------- set-up


async def prepare_database(url: str | None, tmp: Path) -> str:
    if url is None:
        return f"sqlite+aiosqlite:///{tmp}/bench.db"
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {DB_NAME}")
    finally:
        await conn.close()
    return url.rsplit("/", 1)[0] + f"/{DB_NAME}"


async def drop_database(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://").rsplit("/", 1)[0] + "/postgres")
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    finally:
        await conn.close()


async def seed(database_url: str, contacts: int) -> str:
    """One organization with an org admin, their personal token (returned) and ``contacts`` contacts."""
    from sqlalchemy import insert
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from app import models as _models  # noqa: F401
    from app.clock import utcnow
    from app.contacts.models import Category, Contact, contact_category
    from app.db.base import metadata
    from app.tenants.models import Organization, Role
    from app.tenants.services import AccountService, TokenService

    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    async with async_sessionmaker(engine, expire_on_commit=False)() as session:
        org = Organization(name="Bench API")
        session.add(org)
        await session.flush()
        user = await AccountService(session=session).create(
            {
                "email": "bench@example.com",
                "name": "Bench",
                "password": "bench password",
                "role": Role.ORG_ADMIN,
                "organization_id": org.id,
            }
        )
        _, token = await TokenService(session=session).create_personal(user, "bench", None, 1)
        now = utcnow()
        cats = [
            {"id": uuid.uuid4(), "organization_id": org.id, "name": f"Group {i}", "created_at": now, "updated_at": now}
            for i in range(5)
        ]
        await session.execute(insert(Category), cats)
        rows = [
            {
                "id": uuid.uuid4(),
                "organization_id": org.id,
                "first_name": f"Ada{i}",
                "surname": "Lovelace",
                "email": f"ada{i}@example.com",
                "phone": f"+4420794600{i % 100:02d}",
                "opted_out": False,
                "is_unknown": False,
                "created_at": now,
                "updated_at": now,
            }
            for i in range(contacts)
        ]
        await session.execute(insert(Contact), rows)
        links = [
            {"contact_id": r["id"], "category_id": cats[(i + k) % 5]["id"]} for i, r in enumerate(rows) for k in (0, 1)
        ]
        await session.execute(insert(contact_category), links)
        await session.commit()
    await engine.dispose()
    return token


def serve(app_path: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``litestar run`` (what ``voluble run`` is) for ``app_path``: one uvicorn process, its defaults."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "litestar", "--app", app_path, "run", "--host", "127.0.0.1", "--port", str(port)],
            env={**env, "LITESTAR_APP": app_path},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_ready(port: int) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

        async def up() -> bool:
            try:
                return (await client.get("/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(up, 60)


def summarize(path: Path, top: int = 12) -> None:
    """The frames that most samples were in (inclusive), from py-spy's collapsed stacks: our code, the
    libraries, and where the event loop waits."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split("/")[-1] for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    print(f"    py-spy {path.name}: {total} samples; heaviest frames (inclusive %):")
    for frame, n in inclusive.most_common(60)[: top * 3]:
        if "app/" in frame or "(" in frame:
            print(f"      {100 * n / total:5.1f}%  {frame}")
    print("    self time (top):")
    for frame, n in own.most_common(top):
        print(f"      {100 * n / total:5.1f}%  {frame}")


# ---------------------------------------------------------------- main


async def main_async(args: argparse.Namespace, tmp: Path) -> None:
    import httpx

    database_url = await prepare_database(args.database_url, tmp)
    try:
        token = await seed(database_url, args.contacts)
        port, bare_port = free_port(), free_port()
        env = {
            **os.environ,
            "VOLUBLE_DATABASE_URL": database_url,
            "VOLUBLE_REDIS_URL": args.redis_url,
            "VOLUBLE_QUEUE_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
            "VOLUBLE_VAR_DIR": str(tmp),
            "VOLUBLE_SECRET_KEY": "bench-" + "k" * 40,
            "VOLUBLE_LOG_LEVEL": "WARNING",
            # a budget no run spends (1,200 a minute would 429 the second scenario): still counted in Redis
            "VOLUBLE_API_RATE_LIMIT": str(10**9),
        }
        headers = {"Authorization": f"Bearer {token}"}
        voluble = serve("app.asgi:create_app", port, env, tmp / "voluble.log")
        procs = [voluble]
        try:
            await wait_ready(port)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
                chain = (await client.post("/api/v1/servicechains", json={"name": "b", "services": ["log"]})).json()
                page = (await client.get(SCENARIOS["list"][1])).json()
                body = {"contact_id": page["items"][0]["id"], "servicechain_id": chain["id"], "content": "Hi"}
                sent = await client.post("/api/v1/messages", json=body)
                recorded = {"list": page, "me": (await client.get("/api/v1/me")).json(), "post": sent.json()}
            (tmp / "recorded.json").write_text(json.dumps(recorded))
            bare_env = {**env, "BENCH_RECORDED": str(tmp / "recorded.json")}
            procs.append(serve("bench.api:bare_app", bare_port, bare_env, tmp / "bare.log"))
            await wait_ready(bare_port)
            post_body = json.dumps(body).encode()
            for name in args.scenarios.split(","):
                method, path = SCENARIOS[name]
                raw = request_bytes(method, path, headers, post_body if method == "POST" else None)
                spy = None
                if args.profile:
                    out = Path(args.profile) / f"{name}.txt"
                    spy = subprocess.Popen(
                        [
                            "py-spy",
                            "record",
                            "-p",
                            str(voluble.pid),
                            "-r",
                            "200",
                            "-d",
                            str(int(args.seconds) + 1),
                            "-f",
                            "raw",
                            "-o",
                            str(out),
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                ours = await hammer(port, raw, args.clients, args.seconds, voluble.pid)
                if spy is not None:
                    spy.wait(timeout=60)
                bare = await hammer(bare_port, raw, args.clients, args.seconds, procs[1].pid)
                print(f"{method} {path}  ({args.clients} clients, {args.seconds:.0f} s each)")
                for label, run in (("voluble", ours), ("bare   ", bare)):
                    codes = ",".join(f"{k}: {v}" for k, v in sorted(run.statuses.items()))
                    print(
                        f"  {label} {run.rate:8.1f} req/s  p50 {run.pct(50):7.1f} ms  p99 {run.pct(99):7.1f} ms"
                        f"  server CPU {run.cpu_ms:5.2f} ms/request  [{codes}]"
                    )
                print(
                    f"  ratio: {ours.rate / bare.rate:.2f}   p99 ratio: {ours.pct(99) / bare.pct(99):.1f}"
                    f"   CPU per request ratio (bare/voluble): {bare.cpu_ms / ours.cpu_ms:.2f}"
                    f"  (targets for list: ratio >= 0.3, p99 < 10x)"
                )
                if args.profile:
                    summarize(Path(args.profile) / f"{name}.txt")
        except BaseException:
            for log in ("voluble.log", "bare.log"):
                if (tmp / log).exists():
                    print(f"--- {log}:", (tmp / log).read_text()[-3000:], sep="\n")
            raise
        finally:
            stop(procs)
    finally:
        if args.database_url:
            await drop_database(args.database_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--redis-url", default=os.environ.get("VOLUBLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--scenarios", default="list,me")
    parser.add_argument("--profile", default=None, help="a directory for py-spy's samples of the Voluble server")
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("PYTHONPATH", str(ROOT))
        print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        asyncio.run(main_async(args, Path(tmp)))
        print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
