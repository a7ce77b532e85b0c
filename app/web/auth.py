"""Browser authentication: who is signed in (from the server-side session), starting and ending sessions."""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from redis.asyncio import Redis
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.logging import get_logger
from app.tenants.auth import principal_for_user, session_maker
from app.tenants.models import User
from app.tenants.principal import Principal
from app.tenants.ratelimit import RateLimit
from app.tenants.sessions import SESSION_KEY, WebSessionService
from app.tenants.throttle import LoginThrottle

log = get_logger(__name__)


def _session_id(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The raw session id the browser's cookie carries, if any."""
    data = connection.scope.get("session")
    raw = data.get(SESSION_KEY) if isinstance(data, dict) else None
    return raw if isinstance(raw, str) and raw else None


async def principal_from_session(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal | None:
    """The signed-in browser user, or None: an ended, expired or unknown session counts as signed out."""
    raw = _session_id(connection)
    if raw is None:
        return None
    db: AsyncSession
    async with session_maker(connection)() as db:
        sessions = WebSessionService(session=db)
        found = await sessions.resolve(raw)
        if found is None:
            return None
        web, user = found
        if sessions.touch(web):
            try:
                await db.commit()
            except DBAPIError:  # e.g. SQLite busy: the activity note waits for the next minute
                log.warning("could not record session activity", session_id=str(web.id), exc_info=True)
                await db.rollback()
        return dataclasses.replace(principal_for_user(user), session_id=web.id)


class WebSessionAuthMiddleware(AbstractAuthenticationMiddleware):
    """Puts the signed-in :class:`Principal` (or None) in ``scope["user"]``; never refuses by itself.

    The guards of ``app.tenants.guards`` then decide: no principal -> 401 (the login page), wrong
    role -> 403. The cookie names a server-side session (``app.tenants.sessions``): one that was ended
    (logout, password change or reset, sign out everywhere), a deactivated user or a suspended
    organization count as signed out.
    """

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        return AuthenticationResult(user=await principal_from_session(connection), auth=None)


def current_principal(request: Request[Any, Any, Any]) -> Principal | None:
    user = request.scope.get("user")
    return user if isinstance(user, Principal) else None


async def start_session(request: Request[Any, Any, Any], db_session: AsyncSession, user: User) -> None:
    """Replace whatever the browser held by a fresh server-side session of ``user`` (a new id: no
    fixation; the old session, if any, is ended; nothing else of the old cookie survives)."""
    settings: Settings = request.app.state.settings
    _, raw = await WebSessionService(session=db_session).start(
        user,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
        max_age=settings.security.session_max_age,
        replacing=_session_id(request),
    )
    request.clear_session()
    request.set_session({SESSION_KEY: raw})


async def end_session(request: Request[Any, Any, Any], db_session: AsyncSession) -> None:
    """Sign this browser out: its session ends on the server (a copy of the cookie is worthless)."""
    raw = _session_id(request)
    if raw is not None:
        await WebSessionService(session=db_session).end_raw(raw)
    request.set_session({})


def client_ip(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client and request.client.host else "unknown"


def provide_throttle(redis: Redis, settings: Settings) -> LoginThrottle:
    security = settings.security
    return LoginThrottle(
        redis,
        security.login_max_failures_account,
        security.login_max_failures_ip,
        security.login_window_seconds,
    )


def provide_reset_limit(redis: Redis, settings: Settings) -> RateLimit:
    """Password-reset requests, counted per address and per client IP."""
    security = settings.security
    limits = {"address": security.reset_max_per_address, "ip": security.reset_max_per_ip}
    return RateLimit(redis, "reset-request", security.reset_window_seconds, limits)
