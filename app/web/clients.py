"""Org admin pages: the organization's API clients (OAuth client_credentials)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.di import Provide
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Forbidden, ValidationProblem
from app.tenants.guards import requires_org_admin
from app.tenants.principal import ALL_SCOPES, Principal
from app.tenants.services import ApiClientService
from app.web.common import (
    NEWEST,
    FormErrors,
    Page,
    limit_offset,
    no_store,
    org_of,
    page,
    provide_page_number,
    read_form,
    see_other,
    text,
    wants_fragment,
)
from app.web.forms import check_name, chosen_scopes

LIST_URL = "/clients"


def provide_clients(db_session: AsyncSession, principal: Principal) -> ApiClientService:
    return ApiClientService(session=db_session, organization_id=org_of(principal))


def grantable(principal: Principal) -> list[str]:
    return [s for s in ALL_SCOPES if principal.has_scope(s)]


class ClientPages(Controller):
    path = LIST_URL
    guards = [requires_org_admin]
    dependencies = {
        "clients": Provide(provide_clients, sync_to_thread=False),
        "page_number": Provide(provide_page_number, sync_to_thread=False),
    }

    async def _list_page(
        self,
        request: HTMXRequest,
        clients: ApiClientService,
        principal: Principal,
        page_number: int,
        *,
        form: dict[str, Any] | None = None,
        errors: FormErrors | None = None,
        status: int = 200,
    ) -> Response[Any]:
        items, total = await clients.list_and_count(limit_offset(page_number), NEWEST)
        listing = Page(items=items, total=total, number=page_number, url=LIST_URL, target="client-list")
        context = {
            "clients": listing,
            "scopes": grantable(principal),
            "form": form or {"name": "", "scopes": []},
            "errors": errors or FormErrors(),
        }
        if wants_fragment(request, "client-list"):
            return page("partials/_client_table.html", context)
        return page("clients/list.html", context, status=status)

    @get("/", name="clients")
    async def list_clients(
        self, request: HTMXRequest, clients: ApiClientService, principal: Principal, page_number: int
    ) -> Response[Any]:
        return await self._list_page(request, clients, principal, page_number)

    @post("/")
    async def create_client(
        self, request: HTMXRequest, clients: ApiClientService, principal: Principal, settings: Settings
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        name = text(form, "name", 400)
        check_name(name, errors, what="a name for the client, like “CRM integration”")
        scopes = chosen_scopes(form, grantable(principal), errors)
        if not errors:
            try:
                client, secret = await clients.create_client(principal, name, scopes)
            except (ValidationProblem, Forbidden) as exc:
                errors.add("scopes", getattr(exc, "detail", None) or str(exc))
            else:
                context = {"client": client, "secret": secret, "token_url": f"{settings.server.public_url}/oauth/token"}
                return no_store(page("clients/created.html", context, status=201))
        return await self._list_page(
            request, clients, principal, 1, form={"name": name, "scopes": scopes}, errors=errors, status=422
        )

    @post("/{client_id:uuid}/revoke")
    async def revoke_client(
        self, request: HTMXRequest, client_id: UUID, clients: ApiClientService, db_session: AsyncSession
    ) -> Response[Any]:
        client = await clients.revoke(client_id)
        flash(request, f"API client “{client.name}” is revoked; its tokens no longer work.", "success")
        if wants_fragment(request):
            await db_session.commit()
            return page("partials/_client_row.html", {"client": client, "oob_flashes": True})
        return await see_other(db_session, LIST_URL)
