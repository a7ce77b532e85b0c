"""REST controller of ``/services``: installed plugins, their health, and the caller's credentials."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.filters import LimitOffset
from advanced_alchemy.service import OffsetPagination
from litestar import Controller, delete, get, put
from litestar.di import Provide
from litestar.params import Body
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import ValidationProblem
from app.servicehost import schemas
from app.servicehost.registry import PluginRegistry, load_registry
from app.servicehost.services import CredentialService, ServiceCatalog
from app.tenants.guards import requires_org_admin, requires_scope
from app.tenants.principal import Principal

NAME = "/{name:str}"


def provide_registry(settings: Settings) -> PluginRegistry:
    return load_registry(settings)


def provide_credentials(
    db_session: AsyncSession, principal: Principal, settings: Settings, registry: PluginRegistry
) -> CredentialService | None:
    """The caller's organization's credentials; None for a sysadmin (who belongs to none)."""
    if principal.organization_id is None:
        return None
    return CredentialService(
        session=db_session, organization_id=principal.organization_id, settings=settings, registry=registry
    )


def provide_catalog(
    db_session: AsyncSession, registry: PluginRegistry, credentials: CredentialService | None
) -> ServiceCatalog:
    return ServiceCatalog(db_session, registry, credentials)


def _org_credentials(credentials: CredentialService | None) -> CredentialService:
    if credentials is None:
        raise ValidationProblem("Service credentials belong to an organization; sysadmins have none.")
    return credentials


class ServiceController(Controller):
    path = "/services"
    tags = ["services"]
    dependencies = {
        "registry": Provide(provide_registry, sync_to_thread=False),
        "credentials": Provide(provide_credentials, sync_to_thread=False),
        "catalog": Provide(provide_catalog, sync_to_thread=False),
    }

    @get(
        "",
        summary="List the installed services, their health, and whether this organization has credentials",
        guards=[requires_scope("servicechains:read")],
    )
    async def list_services(
        self, catalog: ServiceCatalog, limit_offset: LimitOffset
    ) -> OffsetPagination[schemas.Service]:
        items = await catalog.all()
        page = items[limit_offset.offset : limit_offset.offset + limit_offset.limit]
        return OffsetPagination(items=page, limit=limit_offset.limit, offset=limit_offset.offset, total=len(items))

    @get(
        NAME,
        summary="Get a service, with the JSON Schema of its credentials",
        guards=[requires_scope("servicechains:read")],
    )
    async def get_service(self, name: str, catalog: ServiceCatalog) -> schemas.ServiceDetail:
        return await catalog.get(name)

    @put(
        NAME + "/credentials",
        summary="Save this organization's credentials (checked by the service first; never returned)",
        guards=[requires_org_admin],
    )
    async def put_credentials(
        self,
        name: str,
        catalog: ServiceCatalog,
        credentials: CredentialService | None,
        data: dict[str, Any] = Body(description="The credentials object; see the service's credentials_schema."),
    ) -> schemas.ServiceDetail:
        service = _org_credentials(credentials)
        if not await catalog.exists(name):
            raise NotFoundError(f"No service named {name!r}.")
        await service.put(name, data)
        return await catalog.get(name)

    @delete(
        NAME + "/credentials",
        summary="Delete this organization's credentials for a service",
        guards=[requires_org_admin],
    )
    async def delete_credentials(self, name: str, credentials: CredentialService | None) -> None:
        await _org_credentials(credentials).remove(name)
