"""Org admin pages: the organization's API clients (OAuth client_credentials)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Forbidden
from app.tenants.deps import org_service
from app.tenants.guards import requires_org_admin
from app.tenants.principal import ALL_SCOPES, Principal
from app.tenants.services import ApiClientService
from app.web.common import FormErrors, ListView, catching, done, no_store, page, read_form, text
from app.web.forms import check_name, chosen_scopes

LIST_URL = "/clients"
LIST = ListView(
    url=LIST_URL,
    target="client-list",
    name="clients",
    template="clients/list.html",
    fragment="partials/_client_table.html",
    form={"name": "", "scopes": []},
)


def grantable(principal: Principal) -> list[str]:
    return [s for s in ALL_SCOPES if principal.has_scope(s)]


class ClientPages(Controller):
    path = LIST_URL
    guards = [requires_org_admin]
    dependencies = {"clients": org_service(ApiClientService, what="The API clients page")}

    @get("/", name="clients")
    async def list_clients(
        self, request: HTMXRequest, clients: ApiClientService, principal: Principal, page_number: int
    ) -> Response[Any]:
        return await LIST.render(request, clients, page_number, scopes=grantable(principal))

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
            async with catching(errors, "scopes", also=(Forbidden,)):
                client, secret = await clients.create_client(principal, name, scopes)
            if not errors:
                context = {"client": client, "secret": secret, "token_url": f"{settings.server.public_url}/oauth/token"}
                return no_store(page("clients/created.html", context, status=201))
        shown = {"name": name, "scopes": scopes}
        return await LIST.render(
            request, clients, 1, scopes=grantable(principal), form=shown, errors=errors, status=422
        )

    @post("/{client_id:uuid}/revoke")
    async def revoke_client(
        self, request: HTMXRequest, client_id: UUID, clients: ApiClientService, db_session: AsyncSession
    ) -> Response[Any]:
        client = await clients.revoke(client_id)
        message = f"API client “{client.name}” is revoked; its tokens no longer work."
        return await done(request, db_session, message, LIST_URL, "partials/_client_row.html", {"client": client})
