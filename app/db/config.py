"""Engine, session and alembic configuration (advanced-alchemy), and what the code must know about
the two databases' locking and errors: :func:`write_transaction`, :func:`is_busy_error`,
:func:`is_connection_error`, :func:`database_message`."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

from advanced_alchemy.exceptions import RepositoryError
from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from advanced_alchemy.extensions.litestar import async_autocommit_handler_maker as autocommit_handler_maker
from advanced_alchemy.extensions.litestar._utils import delete_aa_scope_state, get_aa_scope_state
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.types import Message, Scope
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_scoped_session, async_sessionmaker

from app.config import BASE_DIR, Settings
from app.db import sqlite_lock


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


#: PostgreSQL errors that mean "busy, try again": lock_not_available (lock_timeout, NOWAIT),
#: serialization_failure, deadlock_detected.
BUSY_SQLSTATES = frozenset({"55P03", "40001", "40P01"})
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what caused it: advanced-alchemy wraps SQLAlchemy's errors, which wrap the driver's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, sa_exc.DBAPIError) and current.orig is not None:
            current = current.orig
        else:
            current = current.__cause__ or current.__context__


def database_message(exc: BaseException) -> str:
    """The database's own message, for logs: its first line only (never the SQL or the parameter values,
    which may hold personal data), else the exception's type."""
    for e in exception_chain(exc):
        if isinstance(e, sa_exc.DBAPIError) and e.orig is not None:
            lines = str(e.orig).strip().splitlines()
            return f"{type(e.orig).__name__}: {lines[0] if lines else ''}"[:300]
    return type(exc).__name__


def is_busy_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the database being busy (a lock it waited for too long, a serialization
    failure, an exhausted connection pool) rather than anything wrong with the request or the data.

    Only database exceptions count, looked at along their chain (``sqlite3.OperationalError: database is
    locked``, asyncpg's ``LockNotAvailableError``… under SQLAlchemy's and advanced-alchemy's wrappers).
    """
    if not isinstance(exc, sa_exc.SQLAlchemyError | RepositoryError | sqlite3.Error):
        return False
    for e in exception_chain(exc):
        if isinstance(e, sa_exc.TimeoutError):  # no connection free in the pool
            return True
        if getattr(e, "sqlstate", None) in BUSY_SQLSTATES or getattr(e, "pgcode", None) in BUSY_SQLSTATES:
            return True
        if isinstance(e, sqlite3.OperationalError) and str(e).lower().startswith(_SQLITE_BUSY):
            return True
    return False


#: PostgreSQL errors that mean "the server went away or is not ready yet": class 08 (connection
#: exception) and admin_shutdown, crash_shutdown, cannot_connect_now (a restart in progress)
_GONE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the database being unreachable (restarted, failed over, the network cut) rather
    than anything wrong with the work: trying again once it is back is safe for work not yet done.

    A connection refused reaches us bare (asyncpg's ``ConnectionRefusedError`` while the pool connects);
    a connection cut under a query as SQLAlchemy's error with ``connection_invalidated`` set, the pool
    having dropped that connection (``pool_pre_ping`` tests the others before use).
    """
    for e in exception_chain(exc):
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, sa_exc.DisconnectionError | OSError):  # OSError: refused, reset, timed out
            return True
        code = str(getattr(e, "sqlstate", None) or getattr(e, "pgcode", None) or "")
        if code.startswith("08") or code in _GONE_SQLSTATES:
            return True
    return False


@asynccontextmanager
async def write_transaction(session: AsyncSession) -> AsyncIterator[None]:
    """A transaction that will write, committed at the end (rolled back on an error).

    On SQLite it waits for its turn among the writers of every process (:mod:`app.db.sqlite_lock`), then
    starts with ``BEGIN IMMEDIATE``: it holds the single write lock *before* reading. A transaction that
    reads first and writes later cannot wait: if another connection commits in between, SQLite refuses
    its first write at once with "database is locked" (its snapshot is stale), and every later write of
    that transaction too. The session must not be inside a transaction already.
    """
    if session.in_transaction():  # pragma: no cover - a programming error
        raise RuntimeError("write_transaction() needs a session outside any transaction")
    bind = session.get_bind()
    if bind.dialect.name != "sqlite":
        async with _committed(session):
            yield
        return
    async with sqlite_lock.writer(bind.engine.url.database):
        connection = await session.connection()
        async with _committed(session):
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield


@asynccontextmanager
async def _committed(session: AsyncSession) -> AsyncIterator[None]:
    try:
        yield
    except BaseException:
        await session.rollback()
        raise
    await session.commit()


@asynccontextmanager
async def closing_writes(session: AsyncSession) -> AsyncIterator[None]:
    """The writes that end a request's transaction, after its reads, committed at the end (rolled back on
    an error). Keep them few and put the statements that lock a shared row last: a lock is held until the
    commit.

    On PostgreSQL they run in the transaction that did the reads (no extra round trip). On SQLite, where
    the whole database has one write lock, the reads' transaction is ended first, then the writes take
    that lock at once in their turn (:func:`write_transaction`, :mod:`app.db.sqlite_lock`).
    """
    if session.get_bind().dialect.name != "sqlite":
        async with _committed(session):
            yield
        return
    if session.in_transaction():
        await session.commit()  # nothing written yet: lets the read snapshot go (expire_on_commit is off)
    async with write_transaction(session):
        yield


#: ``session.info`` key of the request a session serves: ``(scope["user"], client IP)`` (read by ``app.audit``)
REQUEST_INFO = "request"
#: ``session.info`` key of a request's session in autocommit (see :func:`_reads_only`): the keys its info had then
READS_ONLY = "reads_only"
#: ``session.info`` key of the AUTOCOMMIT engine a reads-only session is bound to (see :func:`reads_only_engine`)
AUTOCOMMIT_ENGINE = "autocommit_engine"


def ping_when_idle(engine: AsyncEngine, seconds: float) -> None:
    """Check a pooled connection before use only when it sat idle ``seconds`` or more.

    ``pool_pre_ping`` costs a round trip on every checkout, that is on every request; a connection
    returned to the pool a moment ago is alive unless the server went away in that moment, and then
    the statement fails, the pool is invalidated (every connection older is replaced) and the request
    answers the error, as a request in flight during a restart does anyway."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _idle(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < seconds:
            return  # a new connection, or one in use a moment ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise sa_exc.DisconnectionError() from exc
        if not alive:
            raise sa_exc.DisconnectionError()


def _reads_only(scope: Scope) -> bool:
    """An API GET: its statements run without BEGIN and COMMIT (autocommit). Under PostgreSQL's READ
    COMMITTED every statement sees its own snapshot anyway; this saves two round trips per request.
    A lookup that writes (the token's use stamp) commits on its own."""
    return scope.get("method") in ("GET", "HEAD") and scope.get("path", "").startswith("/api/")


class RequestSessionConfig(SQLAlchemyAsyncConfig):
    """The request's session also carries who asks and from where (``session.info[REQUEST_INFO]``), so
    what records a change in that session's transaction (the audit log) needs no extra parameters."""

    #: see :func:`ping_when_idle` (0: ``pool_pre_ping``, a check on every checkout)
    ping_after: float = 0.0

    def get_engine(self) -> AsyncEngine:
        if self.engine_instance:
            return self.engine_instance
        engine = super().get_engine()
        if self.ping_after > 0 and engine.dialect.name != "sqlite":
            ping_when_idle(engine, self.ping_after)
        return engine

    def _autocommit_engine(self, engine: AsyncEngine) -> AsyncEngine:
        """The engine's AUTOCOMMIT variant, made once (it shares the engine's pool)."""
        variant = getattr(self, "_autocommit", None)
        if variant is None or variant[0] is not engine:
            variant = self._autocommit = (engine, engine.execution_options(isolation_level="AUTOCOMMIT"))
        return variant[1]

    def provide_session(self, state: State, scope: Scope) -> AsyncSession:
        fresh = get_aa_scope_state(scope, self.session_scope_key) is None
        session = super().provide_session(state, scope)
        client = scope.get("client")
        session.info[REQUEST_INFO] = (scope.get("user"), client[0] if client else None)
        if fresh and _reads_only(scope):
            engine = self.get_engine()
            if engine.dialect.name != "sqlite":
                autocommit = self._autocommit_engine(engine)
                session.sync_session.bind = autocommit.sync_engine
                session.info[AUTOCOMMIT_ENGINE] = autocommit
                # what the session's info holds now: anything added later is a flag for after the commit
                session.info[READS_ONLY] = frozenset(session.info) | {READS_ONLY}
        return session


def reads_only_engine(session: AsyncSession | async_scoped_session[AsyncSession]) -> AsyncEngine | None:
    """For a reads-only request's session (an API GET on PostgreSQL, autocommit) with nothing pending, its
    AUTOCOMMIT engine: a statement may run on a connection of its own, checked out for that statement only
    (nothing of the session is uncommitted; every statement sees its own snapshot anyway). Else None."""
    engine: AsyncEngine | None = session.info.get(AUTOCOMMIT_ENGINE)
    if engine is None or session.new or session.dirty or session.deleted:
        return None
    return engine


def request_session(connection: ASGIConnection[Any, Any, Any, Any]) -> AsyncSession:
    """The request's session, made on first use (the bearer authentication's token lookup, a handler's
    ``db_session``, a service provider): one per request, closed when the answer starts."""
    state = connection.app.state
    config: RequestSessionConfig = state["sqlalchemy_config"]
    return config.provide_session(state, connection.scope)


def _commit_or_close(session_scope_key: str) -> Callable[[Message, Scope], Awaitable[None]]:
    """advanced-alchemy's "autocommit" ``before_send`` handler (commit on 2xx, else roll back, then close),
    except for a session in autocommit (an API GET on PostgreSQL, :func:`_reads_only`) with nothing pending
    (no new, changed or deleted object, nothing flagged in ``session.info``): every statement is committed
    already, so it is closed (its connection returned to the pool) without the commit's bookkeeping."""
    autocommit = autocommit_handler_maker(session_scope_key=session_scope_key)

    async def handler(message: Message, scope: Scope) -> None:
        session: AsyncSession | None = get_aa_scope_state(scope, session_scope_key)
        if (
            session is not None
            and message["type"] == "http.response.start"
            and READS_ONLY in session.info
            and session.info.keys() <= session.info[READS_ONLY]
            and not (session.new or session.dirty or session.deleted)
        ):
            await session.close()
            delete_aa_scope_state(scope, session_scope_key)
            return
        await autocommit(message, scope)

    return handler


def make_sqlalchemy_config(settings: Settings) -> SQLAlchemyAsyncConfig:
    url = settings.database.url
    engine_config = EngineConfig(echo=settings.database.echo)
    ping_after = settings.database.ping_after
    if url.startswith("postgresql"):
        engine_config = EngineConfig(
            echo=settings.database.echo,
            # twice VOLUBLE_DATABASE_POOL_SIZE connections at most, as with as many again in overflow, but kept
            # open: an overflow connection is closed when it comes back to a full pool, so a steady load above
            # the pool size opened and closed one per request (TLS handshake, statements prepared again)
            pool_size=2 * settings.database.pool_size,
            max_overflow=0,
            pool_pre_ping=ping_after <= 0,
        )
    # keys of its own for each config: advanced-alchemy makes clashing keys unique by trying key_1, key_2…
    # recursively against every config ever made in the process (one per app: a test process makes
    # over a thousand, past Python's recursion limit)
    own = uuid4().hex[:12]
    config = RequestSessionConfig(
        connection_string=url,
        session_scope_key=f"_sqlalchemy_db_session_{own}",
        engine_app_state_key=f"db_engine_{own}",
        session_maker_app_state_key=f"session_maker_class_{own}",
        engine_config=engine_config,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler=_commit_or_close(f"_sqlalchemy_db_session_{own}"),
        alembic_config=AlembicAsyncConfig(
            script_location=str(BASE_DIR / "migrations"),
            version_table_name="alembic_version",
            render_as_batch=True,
        ),
    )
    config.ping_after = ping_after
    return config


def make_sessions(settings: Settings) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """An engine and a session maker outside the app (the CLI): dispose of the engine when done."""
    engine = make_sqlalchemy_config(settings).get_engine()
    return engine, async_sessionmaker(engine, expire_on_commit=False)
