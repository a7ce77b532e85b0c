"""REST controller of the caller's own organization (``/organization``)."""

from __future__ import annotations

from litestar import Controller, get, patch

from app.api.deps import changes
from app.tenants import schemas
from app.tenants.deps import acting_organization, service
from app.tenants.guards import requires_scope
from app.tenants.principal import Principal
from app.tenants.services import OrganizationService


class OwnOrganizationController(Controller):
    """Any member (user or client) reads it; changing it takes ``servicechains:write`` (org admins)."""

    path = "/organization"
    tags = ["organization"]
    dependencies = {"organizations": service(OrganizationService)}

    @get("", summary="The caller's own organization, with its default servicechain")
    async def get_own(self, organizations: OrganizationService, principal: Principal) -> schemas.Organization:
        org = await organizations.get(acting_organization(principal))
        return organizations.to_schema(org, schema_type=schemas.Organization)

    @patch(
        "",
        summary="Change the caller's own organization (org admins: default_servicechain_id, null clears it)",
        guards=[requires_scope("servicechains:write")],
    )
    async def update_own(
        self, organizations: OrganizationService, principal: Principal, data: schemas.OwnOrganizationUpdate
    ) -> schemas.Organization:
        org = await organizations.update_own(acting_organization(principal), changes(data))
        return organizations.to_schema(org, schema_type=schemas.Organization)
