"""Organization pages: servicechains, the ordered lists of services a message tries in turn.

Everyone in the organization reads them; org admins (the ``servicechains:write`` scope) create, edit
and delete them. The editor is a plain form whose ordered ``services`` inputs are the chain: its
buttons (add, move up, move down, remove) post the form with an ``op`` and get the form back with the
change applied — only the editor's fragment with htmx, the whole page without it — until "Save".
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts.models import Contact
from app.contacts.services import ContactService
from app.errors import Conflict
from app.messaging.models import Servicechain
from app.messaging.schemas import ServicechainCreate
from app.messaging.services import ServicechainService
from app.servicehost.schemas import Service
from app.servicehost.services import ServiceCatalog
from app.tenants.deps import org_service, scoped
from app.tenants.guards import requires_scope
from app.textfields import max_length
from app.web.common import (
    BY_NAME,
    FormErrors,
    ListView,
    catching,
    done,
    form_values,
    page,
    read_form,
    refused,
    see_other,
    text,
    wants_fragment,
)
from app.web.services import SERVICE_PROVIDERS

LIST_URL = "/servicechains"
READ = requires_scope("servicechains:read")
WRITE = requires_scope("servicechains:write")
NAME_LIMIT = max_length(ServicechainCreate, "name")
DESCRIPTION_LIMIT = max_length(ServicechainCreate, "description")
MAX_SERVICES = max_length(ServicechainCreate, "services")
LIST = ListView(
    url=LIST_URL,
    target="chain-list",
    name="chains",
    template="chains/list.html",
    fragment="partials/_chain_table.html",
    order=BY_NAME,
)


def apply_op(services: list[str], op: str, add: str) -> list[str]:
    """The chain after one editor action: ``add``, ``up:i``, ``down:i`` or ``remove:i``."""
    services = list(services)
    if op == "add":
        if add and add not in services and len(services) < MAX_SERVICES:
            services.append(add)
        return services
    action, _, raw_index = op.partition(":")
    try:
        i = int(raw_index)
    except ValueError:
        return services
    if not 0 <= i < len(services):
        return services
    if action == "up" and i > 0:
        services[i - 1], services[i] = services[i], services[i - 1]
    elif action == "down" and i < len(services) - 1:
        services[i + 1], services[i] = services[i], services[i + 1]
    elif action == "remove":
        services.pop(i)
    return services


def read_chain_form(form: FormMultiDict) -> dict[str, Any]:
    services = [s.strip() for s in form_values(form, "services") if s.strip()][: MAX_SERVICES * 2]
    return {
        "name": text(form, "name", NAME_LIMIT * 4),
        "description": text(form, "description", DESCRIPTION_LIMIT * 4),
        "services": list(dict.fromkeys(services)),
    }


def check_chain(data: dict[str, Any], errors: FormErrors) -> None:
    if not data["name"]:
        errors.add("name", "Enter a name for the chain, like “Email, then SMS”.")
    elif len(data["name"]) > NAME_LIMIT:
        errors.add("name", f"At most {NAME_LIMIT} characters.")
    if len(data["description"]) > DESCRIPTION_LIMIT:
        errors.add("description", f"At most {DESCRIPTION_LIMIT} characters.")
    if not data["services"]:
        errors.add("services", "Add at least one service.")
    elif len(data["services"]) > MAX_SERVICES:
        errors.add("services", f"At most {MAX_SERVICES} services.")


class ChainPages(Controller):
    path = LIST_URL
    guards = [READ]
    dependencies = {"chains": org_service(ServicechainService, what="Servicechains"), **SERVICE_PROVIDERS}

    @get("/", name="servicechains")
    async def list_chains(
        self, request: HTMXRequest, chains: ServicechainService, catalog: ServiceCatalog, page_number: int
    ) -> Response[Any]:
        return await LIST.render(request, chains, page_number, catalog={s.name: s for s in await catalog.all()})

    @get("/{chain_id:uuid}", name="servicechain")
    async def chain_detail(self, chain_id: UUID, chains: ServicechainService, catalog: ServiceCatalog) -> Response[Any]:
        chain = await chains.get(chain_id)
        contacts = scoped(ContactService, chains.repository.session, chains.organization_id)
        users = await contacts.count(Contact.servicechain_id == chain.id)
        context = {"chain": chain, "catalog": {s.name: s for s in await catalog.all()}, "contacts_using": users}
        return page("chains/detail.html", context)

    # ------------------------------------------------------------ the editor

    async def _editor(
        self,
        request: HTMXRequest,
        catalog: ServiceCatalog,
        chain: Servicechain | None,
        form: dict[str, Any],
        errors: FormErrors,
        status: int = 200,
    ) -> Response[Any]:
        services: list[Service] = await catalog.all()
        context = {
            "chain": chain,
            "form": form,
            "errors": errors,
            "catalog": {s.name: s for s in services},
            "addable": [s for s in services if s.name not in form["services"]],
            "action": f"{LIST_URL}/{chain.id}/edit" if chain else LIST_URL,
        }
        if wants_fragment(request, "chain-editor"):
            return page("partials/_chain_editor.html", context, status=status)
        return page("chains/form.html", context, status=status)

    @get("/new", name="servicechain-new", guards=[WRITE])
    async def new_chain(self, request: HTMXRequest, catalog: ServiceCatalog) -> Response[Any]:
        form = {"name": "", "description": "", "services": []}
        return await self._editor(request, catalog, None, form, FormErrors())

    @get("/{chain_id:uuid}/edit", name="servicechain-edit", guards=[WRITE])
    async def edit_chain(
        self, request: HTMXRequest, chain_id: UUID, chains: ServicechainService, catalog: ServiceCatalog
    ) -> Response[Any]:
        chain = await chains.get(chain_id)
        form = {"name": chain.name, "description": chain.description, "services": list(chain.services)}
        return await self._editor(request, catalog, chain, form, FormErrors())

    async def _save(
        self,
        request: HTMXRequest,
        chains: ServicechainService,
        catalog: ServiceCatalog,
        db_session: AsyncSession,
        chain: Servicechain | None,
    ) -> Response[Any]:
        raw = await read_form(request)
        data = read_chain_form(raw)
        op = text(raw, "op", 40)
        if op and op != "save":
            data["services"] = apply_op(data["services"], op, text(raw, "add_service", 64))
            return await self._editor(request, catalog, chain, data, FormErrors())
        errors = FormErrors()
        check_chain(data, errors)
        if not errors:
            async with catching(
                errors, "services", unique=("name", "A servicechain with this name already exists."), session=db_session
            ):
                if chain is None:
                    saved = await chains.create_chain(dict(data))
                else:
                    saved = await chains.update_chain(chain.id, dict(data))
            if not errors:
                verb = "created" if chain is None else "saved"
                flash(request, f"Servicechain “{saved.name}” {verb}: {' → '.join(saved.services)}.", "success")
                return await see_other(db_session, f"{LIST_URL}/{saved.id}")
        return await self._editor(request, catalog, chain, data, errors, status=422)

    @post("/", guards=[WRITE])
    async def create_chain(
        self,
        request: HTMXRequest,
        chains: ServicechainService,
        catalog: ServiceCatalog,
        db_session: AsyncSession,
    ) -> Response[Any]:
        return await self._save(request, chains, catalog, db_session, None)

    @post("/{chain_id:uuid}/edit", guards=[WRITE])
    async def update_chain(
        self,
        request: HTMXRequest,
        chain_id: UUID,
        chains: ServicechainService,
        catalog: ServiceCatalog,
        db_session: AsyncSession,
    ) -> Response[Any]:
        chain = await chains.get(chain_id)
        return await self._save(request, chains, catalog, db_session, chain)

    @post("/{chain_id:uuid}/remove", guards=[WRITE])
    async def remove_chain(
        self, request: HTMXRequest, chain_id: UUID, chains: ServicechainService, db_session: AsyncSession
    ) -> Response[Any]:
        chain = await chains.get(chain_id)
        name = chain.name
        try:
            await chains.remove(chain_id)
        except Conflict as exc:
            return await refused(request, f"“{name}” was not deleted. {exc}", f"{LIST_URL}/{chain_id}", status=409)
        return await done(request, db_session, f"Servicechain “{name}” deleted.", LIST_URL)
