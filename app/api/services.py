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
from app.plugins import schemas
from app.plugins.models import ServiceStatus
from app.plugins.registry import PluginEntry, PluginRegistry, load_registry, service_statuses
from app.plugins.services import CredentialService
from app.tenants.guards import requires_org_admin, requires_scope
from app.tenants.principal import Principal
from app.tenants.services import ValidationProblem

NAME = "/{name:str}"


def provide_registry(settings: Settings) -> PluginRegistry:
    return load_registry(settings)


def _credentials(
    db_session: AsyncSession, principal: Principal, settings: Settings, registry: PluginRegistry
) -> CredentialService | None:
    if principal.organization_id is None:
        return None
    return CredentialService(
        session=db_session, organization_id=principal.organization_id, settings=settings, registry=registry
    )


def _service(name: str, row: ServiceStatus | None, entry: PluginEntry | None, has: bool) -> schemas.Service:
    if row is not None:
        return schemas.Service(
            name=name,
            title=row.title,
            address_field=row.address_field,
            status="available" if row.status == "available" else "blacklisted",
            reason=row.reason,
            checked_at=row.checked_at,
            needs_credentials=row.needs_credentials,
            has_credentials=has,
        )
    assert entry is not None
    return schemas.Service(
        name=name,
        title=entry.title,
        address_field=entry.address_field,
        status=entry.status,
        reason=entry.reason,
        checked_at=entry.checked_at,
        needs_credentials=entry.needs_credentials,
        has_credentials=has,
    )


class ServiceController(Controller):
    """Every installed plugin with its last health check. The recorded check (shared by every process)
    is authoritative; a plugin this process knows but nobody recorded yet is shown from this process."""

    path = "/services"
    tags = ["services"]
    dependencies = {"registry": Provide(provide_registry, sync_to_thread=False)}

    async def _known(
        self, db_session: AsyncSession, registry: PluginRegistry
    ) -> tuple[dict[str, ServiceStatus], list[str]]:
        rows = await service_statuses(db_session)
        return rows, sorted(set(rows) | set(registry.names()))

    async def _one(
        self, name: str, db_session: AsyncSession, principal: Principal, settings: Settings, registry: PluginRegistry
    ) -> schemas.ServiceDetail:
        rows, names = await self._known(db_session, registry)
        if name not in names:
            raise NotFoundError(f"No service named {name!r}.")
        entry = registry.entry(name)
        credentials = _credentials(db_session, principal, settings, registry)
        has = await credentials.has(name) if credentials else False
        base = _service(name, rows.get(name), entry, has)
        info = entry.info if entry else None
        return schemas.ServiceDetail(
            **{f: getattr(base, f) for f in base.__struct_fields__},
            description=info.description if info else "",
            credentials_schema=schemas.credentials_schema(info.credentials_type) if info else None,
        )

    @get(
        "",
        summary="List the installed services, their health and whether this organization has credentials",
        guards=[requires_scope("servicechains:read")],
    )
    async def list_services(
        self,
        db_session: AsyncSession,
        principal: Principal,
        settings: Settings,
        registry: PluginRegistry,
        limit_offset: LimitOffset,
    ) -> OffsetPagination[schemas.Service]:
        rows, names = await self._known(db_session, registry)
        credentials = _credentials(db_session, principal, settings, registry)
        mine = await credentials.names() if credentials else set()
        items = [_service(name, rows.get(name), registry.entry(name), name in mine) for name in names]
        page = items[limit_offset.offset : limit_offset.offset + limit_offset.limit]
        return OffsetPagination(items=page, limit=limit_offset.limit, offset=limit_offset.offset, total=len(items))

    @get(
        NAME,
        summary="Get a service, with the JSON Schema of its credentials",
        guards=[requires_scope("servicechains:read")],
    )
    async def get_service(
        self, name: str, db_session: AsyncSession, principal: Principal, settings: Settings, registry: PluginRegistry
    ) -> schemas.ServiceDetail:
        return await self._one(name, db_session, principal, settings, registry)

    @put(
        NAME + "/credentials",
        summary="Save this organization's credentials (checked by the service first)",
        guards=[requires_org_admin],
    )
    async def put_credentials(
        self,
        name: str,
        db_session: AsyncSession,
        principal: Principal,
        settings: Settings,
        registry: PluginRegistry,
        data: dict[str, Any] = Body(description="The credentials object; see the service's credentials_schema."),
    ) -> schemas.ServiceDetail:
        credentials = self._org_credentials(db_session, principal, settings, registry)
        _, names = await self._known(db_session, registry)
        if name not in names:
            raise NotFoundError(f"No service named {name!r}.")
        await credentials.put(name, data)
        return await self._one(name, db_session, principal, settings, registry)

    @delete(
        NAME + "/credentials",
        summary="Delete this organization's credentials for a service",
        guards=[requires_org_admin],
    )
    async def delete_credentials(
        self, name: str, db_session: AsyncSession, principal: Principal, settings: Settings, registry: PluginRegistry
    ) -> None:
        credentials = self._org_credentials(db_session, principal, settings, registry)
        await credentials.remove(name)

    @staticmethod
    def _org_credentials(
        db_session: AsyncSession, principal: Principal, settings: Settings, registry: PluginRegistry
    ) -> CredentialService:
        credentials = _credentials(db_session, principal, settings, registry)
        if credentials is None:
            raise ValidationProblem("Service credentials belong to an organization; sysadmins have none.")
        return credentials
