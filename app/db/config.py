"""Engine, session and alembic configuration (advanced-alchemy)."""

from __future__ import annotations

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)

from app.config import BASE_DIR, Settings


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
