"""Organization pages: the settings of the caller's own organization (its plan, credits and default
servicechain). Every member reads them; org admins (the ``servicechains:write`` scope) change the
default chain."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get, post
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.messaging.services import ServicechainService
from app.tenants.deps import org_service
from app.tenants.guards import requires_principal, requires_scope
from app.tenants.services import OrganizationService
from app.web.common import BY_NAME, FormErrors, catching, done, page, parse_uuid, read_form, text, wants_fragment

SETTINGS_URL = "/settings"
FIELD = "default_servicechain_id"
WRITE = requires_scope("servicechains:write")


class SettingsPages(Controller):
    path = SETTINGS_URL
    guards = [requires_principal]
    dependencies = {"chains": org_service(ServicechainService, what="Settings")}

    async def _settings(
        self,
        request: HTMXRequest,
        chains: ServicechainService,
        *,
        errors: FormErrors | None = None,
        chosen: str | None = None,
        status: int = 200,
        oob_flashes: bool = False,
    ) -> Response[Any]:
        org = await OrganizationService(session=chains.repository.session).get(chains.organization_id)
        items = await chains.list(BY_NAME)
        default = next((c for c in items if c.id == org.default_servicechain_id), None)
        context = {
            "org": org,
            "chains": items,
            "default_chain": default,
            "chosen": str(org.default_servicechain_id or "") if chosen is None else chosen,
            "errors": errors or FormErrors(),
            "oob_flashes": oob_flashes,
        }
        if wants_fragment(request, "default-chain"):
            return page("partials/_default_chain.html", context, status=status)
        return page("organization/settings.html", context, status=status)

    @get("/", name="settings")
    async def settings(self, request: HTMXRequest, chains: ServicechainService) -> Response[Any]:
        return await self._settings(request, chains)

    @post("/default-servicechain", guards=[WRITE])
    async def set_default_chain(
        self, request: HTMXRequest, chains: ServicechainService, db_session: AsyncSession
    ) -> Response[Any]:
        raw = text(await read_form(request), FIELD, 64)
        chain_id = parse_uuid(raw)
        errors = FormErrors()
        if raw and chain_id is None:
            errors.add(FIELD, "Choose a servicechain from the list.")
        else:
            async with catching(errors, FIELD):
                await OrganizationService(session=db_session).update_own(chains.organization_id, {FIELD: chain_id})
            if not errors:
                chain = await chains.get(chain_id) if chain_id else None
                message = f"Default servicechain set to “{chain.name}”." if chain else "Default servicechain cleared."

                async def settings() -> Response[Any]:
                    return await self._settings(request, chains, oob_flashes=True)

                return await done(request, db_session, message, SETTINGS_URL, settings)
        await db_session.rollback()
        return await self._settings(request, chains, errors=errors, chosen=raw, status=422)
