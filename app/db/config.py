"""Engine, session and alembic configuration (advanced-alchemy)."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.config import BASE_DIR, Settings


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    """SQLite is shared by the web process and the workers: WAL lets readers run beside the one
    writer, and a busy timeout makes a writer wait its turn instead of failing."""
    module = type(dbapi_connection).__module__
    if "sqlite" not in module:
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_sqlalchemy_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    url = settings.database.url
    engine_config = EngineConfig(echo=settings.database.echo)
    if url.startswith("postgresql"):
        engine_config = EngineConfig(
            echo=settings.database.echo,
            pool_size=settings.database.pool_size,
            max_overflow=settings.database.pool_size,
            pool_pre_ping=True,
        )
    return SQLAlchemyAsyncConfig(
        connection_string=url,
        engine_config=engine_config,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler="autocommit",
        alembic_config=AlembicAsyncConfig(
            script_location=str(BASE_DIR / "migrations"),
            version_table_name="alembic_version",
            render_as_batch=True,
        ),
    )
