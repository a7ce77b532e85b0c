"""Dependencies shared by the API controllers: the principal, pagination, services."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec
from advanced_alchemy.filters import LimitOffset
from litestar import Request
from litestar.params import Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import ValidationProblem
from app.tenants.guards import principal_of
from app.tenants.principal import Principal
from app.tenants.services import AccountService, ApiClientService, OrganizationService, TokenService, UserService


def changes(data: msgspec.Struct) -> dict[str, Any]:
    """The fields a PATCH body sets (everything not left UNSET), for a service's ``update``."""
    return {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_of(request)


def provide_limit_offset(
    limit: int = Parameter(query="limit", ge=1, le=500, default=50, description="Page size (≤ 500)."),
    offset: int = Parameter(query="offset", ge=0, le=2**31 - 1, default=0, description="Items to skip."),
) -> LimitOffset:
    return LimitOffset(limit=limit, offset=offset)


def provide_organizations(db_session: AsyncSession) -> OrganizationService:
    return OrganizationService(session=db_session)


def provide_accounts(db_session: AsyncSession) -> AccountService:
    return AccountService(session=db_session)


def provide_tokens(db_session: AsyncSession) -> TokenService:
    return TokenService(session=db_session)


def acting_organization(principal: Principal, organization_id: UUID | None = None) -> UUID:
    """The organization a request acts on: the caller's own; a sysadmin (who has none) names one."""
    org = organization_id if principal.is_sysadmin and organization_id else principal.organization_id
    if org is None:
        raise ValidationProblem("organization_id is required for a sysadmin.", "organization_id")
    return org


def org_users(db_session: AsyncSession, principal: Principal, organization_id: UUID | None = None) -> UserService:
    """Users of the caller's organization; a sysadmin names the organization instead."""
    return UserService(session=db_session, organization_id=acting_organization(principal, organization_id))


def org_clients(
    db_session: AsyncSession, principal: Principal, organization_id: UUID | None = None
) -> ApiClientService:
    """API clients of the caller's organization; a sysadmin names the organization instead."""
    return ApiClientService(session=db_session, organization_id=acting_organization(principal, organization_id))
