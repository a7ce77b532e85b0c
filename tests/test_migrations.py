"""``alembic upgrade head`` on an empty database gives exactly the schema of the models, on both backends."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from advanced_alchemy.alembic.commands import AlembicCommands
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app import models as _models  # noqa: F401  (registers every table)
from app.config import DatabaseSettings, Settings
from app.db.base import metadata
from app.db.config import make_sqlalchemy_config
from tests.conftest import PG_URL


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(PG_URL))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database that has never seen a table."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}"
        return
    name = f"voluble_m_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _commands(url: str, tmp_path: Path) -> AlembicCommands:
    base = Settings.from_env()
    settings = dataclasses.replace(base, database=DatabaseSettings(url=url, pool_size=2), var_dir=tmp_path)
    return AlembicCommands(sqlalchemy_config=make_sqlalchemy_config(settings))


async def _inspect(url: str) -> tuple[set[str], list[Any]]:
    """(tables, differences between the database and the models)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:

            def run(sync_conn: Any) -> tuple[set[str], list[Any]]:
                tables = set(inspect(sync_conn).get_table_names())
                compare_type: Any = True
                if sync_conn.dialect.name == "sqlite":
                    # SQLite keeps each column's declared type as written, but SQLAlchemy reflects names
                    # it does not know (BINARY(16) of a GUID) by affinity (NUMERIC): compare the DDL text.
                    declared = {
                        (table, row[1]): row[2]
                        for table in tables
                        for row in sync_conn.exec_driver_sql(f'PRAGMA table_info("{table}")')
                    }

                    def compare_type(ctx: Any, inspected: Any, model: Any, _: Any, model_type: Any) -> bool:
                        wanted = model_type.compile(dialect=sync_conn.dialect)
                        return bool(
                            declared[(inspected.table.name, inspected.name)].upper() != wanted.upper()
                        )

                context = MigrationContext.configure(
                    sync_conn, opts={"compare_type": compare_type, "compare_server_default": False}
                )
                return tables, compare_metadata(context, metadata)

            return await conn.run_sync(run)
    finally:
        await engine.dispose()


def test_upgrade_from_empty_matches_the_models(empty_database: str, tmp_path: Path) -> None:
    tables, _ = asyncio.run(_inspect(empty_database))
    assert tables == set(), "the database must start empty"

    _commands(empty_database, tmp_path).upgrade("head")

    tables, differences = asyncio.run(_inspect(empty_database))
    assert {t.name for t in metadata.sorted_tables} <= tables
    assert "alembic_version" in tables
    assert differences == [], "\n".join(map(str, differences))


def test_downgrade_to_base_and_upgrade_again(empty_database: str, tmp_path: Path) -> None:
    commands = _commands(empty_database, tmp_path)
    commands.upgrade("head")
    commands.downgrade("base")
    tables, _ = asyncio.run(_inspect(empty_database))
    assert tables <= {"alembic_version"}, tables
    commands.upgrade("head")
    tables, differences = asyncio.run(_inspect(empty_database))
    assert {t.name for t in metadata.sorted_tables} <= tables
    assert differences == [], "\n".join(map(str, differences))
