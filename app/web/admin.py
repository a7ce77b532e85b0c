"""Sysadmin pages: organizations (list, create, suspend) and their admins."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from advanced_alchemy.exceptions import DuplicateKeyError, IntegrityError
from litestar import Controller, Response, get, post
from litestar.di import Provide
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, ValidationProblem
from app.tenants.guards import requires_sysadmin
from app.tenants.models import Organization, Role
from app.tenants.principal import Principal
from app.tenants.services import OrganizationService, UserService, _check_role_assignment
from app.web.common import (
    NEWEST,
    FormErrors,
    Page,
    limit_offset,
    page,
    provide_page_number,
    read_form,
    see_other,
    text,
    wants_fragment,
)
from app.web.forms import new_user_fields, organization_fields

LIST_URL = "/admin/organizations"


def provide_organizations(db_session: AsyncSession) -> OrganizationService:
    return OrganizationService(session=db_session)


class OrganizationPages(Controller):
    path = LIST_URL
    guards = [requires_sysadmin]
    dependencies = {
        "organizations": Provide(provide_organizations, sync_to_thread=False),
        "page_number": Provide(provide_page_number, sync_to_thread=False),
    }

    async def _list_page(
        self,
        request: HTMXRequest,
        organizations: OrganizationService,
        page_number: int,
        *,
        form: dict[str, Any] | None = None,
        errors: FormErrors | None = None,
        status: int = 200,
    ) -> Response[Any]:
        items, total = await organizations.list_and_count(limit_offset(page_number), NEWEST)
        listing = Page(items=items, total=total, number=page_number, url=LIST_URL, target="org-list")
        context = {"orgs": listing, "form": form or {"name": "", "plan": "PAYG"}, "errors": errors or FormErrors()}
        if wants_fragment(request, "org-list"):
            return page("partials/_org_table.html", context)
        return page("admin/organizations.html", context, status=status)

    @get("/", name="admin-organizations")
    async def list_organizations(
        self, request: HTMXRequest, organizations: OrganizationService, page_number: int
    ) -> Response[Any]:
        return await self._list_page(request, organizations, page_number)

    @post("/")
    async def create_organization(
        self, request: HTMXRequest, organizations: OrganizationService, db_session: AsyncSession
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        data = organization_fields(form, errors)
        if not errors:
            try:
                org = await organizations.create(dict(data))
            except Conflict as exc:
                errors.add("name", str(exc))
            except (DuplicateKeyError, IntegrityError):
                await db_session.rollback()
                errors.add("name", "An organization with this name already exists.")
            else:
                flash(request, f"Organization “{org.name}” created. Now create its first admin.", "success")
                return await see_other(db_session, f"{LIST_URL}/{org.id}")
        return await self._list_page(request, organizations, 1, form=data, errors=errors, status=422)

    async def _detail_page(
        self,
        organization_id: UUID,
        organizations: OrganizationService,
        db_session: AsyncSession,
        page_number: int,
        *,
        form: dict[str, Any] | None = None,
        errors: FormErrors | None = None,
        status: int = 200,
    ) -> Response[Any]:
        org = await organizations.get(organization_id)
        users = UserService(session=db_session, organization_id=org.id)
        items, total = await users.list_and_count(limit_offset(page_number), NEWEST)
        listing = Page(items=items, total=total, number=page_number, url=f"{LIST_URL}/{org.id}", target="")
        context = {
            "org": org,
            "users": listing,
            "form": form or {"email": "", "name": ""},
            "errors": errors or FormErrors(),
        }
        return page("admin/organization_detail.html", context, status=status)

    @get("/{organization_id:uuid}", name="admin-organization")
    async def organization_detail(
        self, organization_id: UUID, organizations: OrganizationService, db_session: AsyncSession, page_number: int
    ) -> Response[Any]:
        return await self._detail_page(organization_id, organizations, db_session, page_number)

    @post("/{organization_id:uuid}/suspension")
    async def set_suspension(
        self,
        request: HTMXRequest,
        organization_id: UUID,
        organizations: OrganizationService,
        db_session: AsyncSession,
    ) -> Response[Any]:
        form = await read_form(request)
        suspend = text(form, "suspended") in {"1", "true", "on", "yes"}
        org = await organizations.update({"suspended": suspend}, item_id=organization_id)
        message = (
            f"“{org.name}” is suspended: its users and API clients are refused until you reactivate it."
            if suspend
            else f"“{org.name}” is active again."
        )
        flash(request, message, "warning" if suspend else "success")
        if wants_fragment(request):
            await db_session.commit()
            return page("partials/_org_row.html", {"org": org, "oob_flashes": True})
        back = f"{LIST_URL}/{org.id}" if text(form, "return_to") == "detail" else LIST_URL
        return await see_other(db_session, back)

    @post("/{organization_id:uuid}/admins")
    async def create_admin(
        self,
        request: HTMXRequest,
        organization_id: UUID,
        organizations: OrganizationService,
        db_session: AsyncSession,
        principal: Principal,
    ) -> Response[Any]:
        org: Organization = await organizations.get(organization_id)
        form = await read_form(request)
        errors = FormErrors()
        data = new_user_fields(form, [Role.ORG_ADMIN], errors)
        if not errors:
            _check_role_assignment(principal, data["role"])
            try:
                user = await UserService(session=db_session, organization_id=org.id).create(dict(data))
            except ValidationProblem as exc:
                errors.add(exc.field, exc.detail)
            except Conflict as exc:
                errors.add("email", str(exc))
            except (DuplicateKeyError, IntegrityError):
                await db_session.rollback()
                errors.add("email", "A user with this email already exists.")
            else:
                flash(request, f"{user.name} <{user.email}> is now an admin of “{org.name}”.", "success")
                return await see_other(db_session, f"{LIST_URL}/{org.id}")
        data.pop("password", None)
        return await self._detail_page(
            organization_id, organizations, db_session, 1, form=data, errors=errors, status=422
        )
