"""Guards: authentication state, roles and OAuth scopes.

All are coroutines: Litestar runs a plain function guard in a worker thread (a thread hop per guard and
request, 16 % of the API's time under load before they were made ``async``, see docs/performance.md)."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from app.tenants.deps import NoOrganization, principal_of


async def requires_principal(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    principal_of(connection)


async def requires_sysadmin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if not principal_of(connection).is_sysadmin:
        raise PermissionDeniedException("This needs the sysadmin role.")


async def requires_org_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    principal = principal_of(connection)
    if not principal.is_org_admin or not principal.has_scope("users:admin"):
        raise PermissionDeniedException("This needs the org_admin role and the users:admin scope.")


def requires_organization(what: str) -> Any:
    """A guard for what belongs to an organization: a sysadmin (who has none) is refused, 403."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if principal_of(connection).organization_id is None:
            raise NoOrganization(what)

    return guard


async def requires_user(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if principal_of(connection).kind != "user":
        raise PermissionDeniedException("Only a user (not an API client) can do this.")


def requires_scope(*scopes: str) -> Any:
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = principal_of(connection)
        missing = [s for s in scopes if not principal.has_scope(s)]
        if missing:
            raise PermissionDeniedException(f"Missing scope: {' '.join(missing)}")

    return guard
