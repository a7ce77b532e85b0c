"""Browser authentication: who is signed in (from the session cookie), and starting a session."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from redis.asyncio import Redis

from app.config import Settings
from app.tenants.auth import principal_from_session
from app.tenants.models import User
from app.tenants.principal import Principal
from app.tenants.throttle import LoginThrottle


class WebSessionAuthMiddleware(AbstractAuthenticationMiddleware):
    """Puts the signed-in :class:`Principal` (or None) in ``scope["user"]``; never refuses by itself.

    The guards of ``app.tenants.guards`` then decide: no principal -> 401 (the login page), wrong
    role -> 403. A session whose ``sv`` no longer matches the user's ``session_version`` (password
    changed or reset elsewhere), a deactivated user or a suspended organization count as signed out.
    """

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        return AuthenticationResult(user=await principal_from_session(connection), auth=None)


def current_principal(request: Request[Any, Any, Any]) -> Principal | None:
    user = request.scope.get("user")
    return user if isinstance(user, Principal) else None


def start_session(request: Request[Any, Any, Any], user: User) -> None:
    """Replace whatever the session held by a fresh one for ``user`` (no fixation, no leftovers)."""
    request.clear_session()
    request.set_session({"uid": str(user.id), "sv": user.session_version})


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
