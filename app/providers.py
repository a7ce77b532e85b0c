"""Litestar providers that join two domains (the service host and tenancy), shared by both faces: the
plugin registry, the caller's organization's credentials (a sysadmin: 403) and the catalog of services
(health for anyone; credentials for an organization's members). Single-domain services come from
:func:`app.tenants.deps.org_service` / :func:`app.tenants.deps.service`."""

from __future__ import annotations

from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.services import AuditReader, AuditService, InstanceAuditService
from app.config import Settings
from app.servicehost.registry import PluginRegistry, load_registry
from app.servicehost.services import CredentialService, ServiceCatalog
from app.tenants.deps import acting_organization, org_service, scoped
from app.tenants.principal import Principal


def provide_registry(settings: Settings) -> PluginRegistry:
    return load_registry(settings)


def provide_catalog(
    db_session: AsyncSession, principal: Principal, settings: Settings, registry: PluginRegistry
) -> ServiceCatalog:
    """Every installed service's health, for anyone; a sysadmin (no organization) has no credentials."""
    org = principal.organization_id
    credentials = scoped(CredentialService, db_session, org, settings=settings, registry=registry) if org else None
    return ServiceCatalog(db_session, registry, credentials)


#: ``registry``, ``credentials`` and ``catalog``, for the services endpoints and pages (and the chain pages)
SERVICE_DEPENDENCIES = {
    "registry": Provide(provide_registry, sync_to_thread=False),
    "credentials": org_service(CredentialService, what="A service's credentials"),
    "catalog": Provide(provide_catalog, sync_to_thread=False),
}


def provide_audit(db_session: AsyncSession, principal: Principal) -> AuditReader:
    """The audit log a caller may read: a sysadmin's is the instance's, an org admin's their organization's."""
    if principal.is_sysadmin:
        return InstanceAuditService(session=db_session)
    return scoped(AuditService, db_session, acting_organization(principal, what="The audit log"))


AUDIT_DEPENDENCIES = {"audit": Provide(provide_audit, sync_to_thread=False)}
