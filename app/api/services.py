"""REST controller of ``/services``: installed plugins, their health, and the caller's credentials."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.filters import LimitOffset
from advanced_alchemy.service import OffsetPagination
from litestar import Controller, delete, get, patch, put
from litestar.params import Body

from app.providers import SERVICE_DEPENDENCIES
from app.servicehost import schemas
from app.servicehost.services import CredentialService, ServiceCatalog
from app.tenants.guards import requires_org_admin, requires_scope

NAME = "/{name:str}"


class ServiceController(Controller):
    path = "/services"
    tags = ["services"]
    dependencies = SERVICE_DEPENDENCIES

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
        credentials: CredentialService,
        data: dict[str, Any] = Body(
            description="The credentials object (see the service's credentials_schema), with an optional "
            "`rate_per_second`: this organization's own, lower send rate (absent: the saved one stays)."
        ),
    ) -> schemas.ServiceDetail:
        if not await catalog.exists(name):
            raise NotFoundError(f"No service named {name!r}.")
        await credentials.put(name, data)
        return await catalog.get(name)

    @patch(
        NAME + "/credentials",
        summary="Set this organization's own send rate on a service (lower than the service's; null: the service's)",
        guards=[requires_org_admin],
    )
    async def set_rate(
        self, name: str, catalog: ServiceCatalog, credentials: CredentialService, data: schemas.CredentialsRateUpdate
    ) -> schemas.ServiceDetail:
        await credentials.set_rate(name, data.rate_per_second)
        return await catalog.get(name)

    @delete(
        NAME + "/credentials",
        summary="Delete this organization's credentials for a service",
        guards=[requires_org_admin],
    )
    async def delete_credentials(self, name: str, credentials: CredentialService) -> None:
        await credentials.remove(name)
