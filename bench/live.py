"""Live pages benchmark: requests/s of the polled fragments, answered 304 (If-None-Match) or in full.

    uv run python bench/live.py [--database-url URL] [--redis-url URL] [-n 300]

Runs after ``bench/stats.py`` (it uses the organization that one loaded into ``voluble_bench_stats``):
adds a user, signs in, then polls, in-process (no network), the message log (``#message-list``), the
dashboard's figures (``#dashboard-stats``) and one message's status (``#message-status``), ``-n`` times
each, with and without the ETag, and prints requests/s (decision 0028, docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import html
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB = "postgresql+asyncpg://postgres@127.0.0.1:5432/voluble_bench_stats"
PASSWORD = "bench-password-Zq9-long"
ETAG = re.compile(r'data-etag="([^"]+)"')


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DB)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args()

    from litestar.testing import AsyncTestClient
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from app.asgi import create_app
    from app.config import DatabaseSettings, RedisSettings, Settings
    from app.messaging.models import Message
    from app.tenants.models import Organization, Role
    from app.tenants.services import AccountService

    engine = create_async_engine(args.database_url)
    async with AsyncSession(engine) as session:
        org = (await session.execute(select(Organization).limit(1))).scalar_one()
        message_id = (
            await session.execute(select(Message.id).where(Message.organization_id == org.id).limit(1))
        ).scalar_one()
        email = f"bench-{time.time_ns()}@example.com"
        await AccountService(session=session).create(
            {"email": email, "name": "Bench", "password": PASSWORD, "role": Role.USER, "organization_id": org.id}
        )
        await session.commit()
    await engine.dispose()

    base = Settings.from_env()
    settings = dataclasses.replace(
        base,
        database=DatabaseSettings(url=args.database_url, pool_size=5),
        redis=RedisSettings(url=args.redis_url, embedded=False),
        security=dataclasses.replace(base.security, secret_key="bench-secret-" + "x" * 40),
        var_dir=Path(tempfile.mkdtemp()),
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        login = await client.get("/login")
        token = re.search(r'name="_csrf_token" value="([^"]+)"', login.text)
        assert token, "no CSRF token on /login"
        form = {"email": email, "password": PASSWORD, "next": "", "_csrf_token": token.group(1)}
        assert (await client.post("/login", data=form, follow_redirects=False)).status_code == 303
        for title, url, target in (
            ("message log", "/messages?page=1", "message-list"),
            ("dashboard figures", "/", "dashboard-stats"),
            ("message status", f"/messages/{message_id}", "message-status"),
        ):
            headers = {"HX-Request": "true", "HX-Target": target}
            first = await client.get(url, headers=headers)
            match = ETAG.search(first.text)
            assert first.status_code == 200 and match, (first.status_code, first.text[:200])
            etag = html.unescape(match.group(1))
            for label, extra, status in (("full (200)", {}, 200), ("unchanged (304)", {"If-None-Match": etag}, 304)):
                started = time.perf_counter()
                for _ in range(args.n):
                    answer = await client.get(url, headers={**headers, **extra})
                    assert answer.status_code == status, answer.status_code
                elapsed = time.perf_counter() - started
                print(f"{title:18} {label:16} {args.n / elapsed:7.0f} req/s  {elapsed / args.n * 1000:6.1f} ms/request")


if __name__ == "__main__":
    asyncio.run(main())
