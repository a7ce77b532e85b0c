"""Sysadmin pages: organizations (list, create, suspend) and their admins."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.tenants.deps import scoped, service
from app.tenants.guards import requires_sysadmin
from app.tenants.models import Organization, Role
from app.tenants.principal import Principal
from app.tenants.services import OrganizationService, UserService
from app.web.common import FormErrors, ListView, catching, checked, done, page, paged, read_form, see_other, text
from app.web.forms import new_user_fields, organization_fields, rate_limit_field

LIST_URL = "/admin/organizations"
LIST = ListView(
    url=LIST_URL,
    target="org-list",
    name="orgs",
    template="admin/organizations.html",
    fragment="partials/_org_table.html",
    form={"name": "", "plan": "PAYG"},
)


class OrganizationPages(Controller):
    path = LIST_URL
    guards = [requires_sysadmin]
    dependencies = {"organizations": service(OrganizationService)}

    @get("/", name="admin-organizations")
    async def list_organizations(
        self, request: HTMXRequest, organizations: OrganizationService, page_number: int
    ) -> Response[Any]:
        return await LIST.render(request, organizations, page_number)

    @post("/")
    async def create_organization(
        self, request: HTMXRequest, organizations: OrganizationService, db_session: AsyncSession
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        data = organization_fields(form, errors)
        if not errors:
            async with catching(
                errors, "name", unique=("name", "An organization with this name already exists."), session=db_session
            ):
                org = await organizations.create(dict(data))
            if not errors:
                flash(request, f"Organization “{org.name}” created. Now create its first admin.", "success")
                return await see_other(db_session, f"{LIST_URL}/{org.id}")
        return await LIST.render(request, organizations, 1, form=data, errors=errors, status=422)

    async def _detail_page(
        self,
        organization_id: UUID,
        organizations: OrganizationService,
        db_session: AsyncSession,
        page_number: int,
        settings: Settings,
        *,
        form: dict[str, Any] | None = None,
        errors: FormErrors | None = None,
        status: int = 200,
        limit_form: dict[str, Any] | None = None,
        limit_errors: FormErrors | None = None,
    ) -> Response[Any]:
        org = await organizations.get(organization_id)
        users = scoped(UserService, db_session, org.id)
        context = {
            "org": org,
            "users": await paged(users, page_number, url=f"{LIST_URL}/{org.id}"),
            "form": form or {"email": "", "name": ""},
            "errors": errors or FormErrors(),
            "default_rate_limit": settings.rate_limits.api_per_token,
            "limit_form": limit_form or {"api_rate_limit": org.api_rate_limit or ""},
            "limit_errors": limit_errors or FormErrors(),
        }
        return page("admin/organization_detail.html", context, status=status)

    @get("/{organization_id:uuid}", name="admin-organization")
    async def organization_detail(
        self,
        organization_id: UUID,
        organizations: OrganizationService,
        db_session: AsyncSession,
        page_number: int,
        settings: Settings,
    ) -> Response[Any]:
        return await self._detail_page(organization_id, organizations, db_session, page_number, settings)

    @post("/{organization_id:uuid}/rate-limit")
    async def set_rate_limit(
        self,
        request: HTMXRequest,
        organization_id: UUID,
        organizations: OrganizationService,
        db_session: AsyncSession,
        settings: Settings,
    ) -> Response[Any]:
        """The organization's API budget (requests a minute per token); blank: the instance default."""
        await organizations.get(organization_id)  # another id: 404 before reading the form
        form = await read_form(request)
        errors = FormErrors()
        budget = rate_limit_field(form, errors)
        if errors:
            limit_form = {"api_rate_limit": text(form, "api_rate_limit", 40)}
            return await self._detail_page(
                organization_id, organizations, db_session, 1, settings,
                status=422, limit_form=limit_form, limit_errors=errors,
            )  # fmt: skip
        org = await organizations.update({"api_rate_limit": budget}, item_id=organization_id)
        default = settings.rate_limits.api_per_token
        shown = f"{budget:,} API requests a minute per token" if budget else f"the default ({default:,} a minute)"
        flash(request, f"“{org.name}” now has {shown}.", "success")
        return await see_other(db_session, f"{LIST_URL}/{org.id}")

    @post("/{organization_id:uuid}/suspension")
    async def set_suspension(
        self,
        request: HTMXRequest,
        organization_id: UUID,
        organizations: OrganizationService,
        db_session: AsyncSession,
    ) -> Response[Any]:
        form = await read_form(request)
        suspend = checked(form, "suspended")
        org = await organizations.update({"suspended": suspend}, item_id=organization_id)
        message = (
            f"“{org.name}” is suspended: its users and API clients are refused until you reactivate it."
            if suspend
            else f"“{org.name}” is active again."
        )
        back = f"{LIST_URL}/{org.id}" if text(form, "return_to") == "detail" else LIST_URL
        category = "warning" if suspend else "success"
        return await done(request, db_session, message, back, "partials/_org_row.html", {"org": org}, category=category)

    @post("/{organization_id:uuid}/admins")
    async def create_admin(
        self,
        request: HTMXRequest,
        organization_id: UUID,
        organizations: OrganizationService,
        db_session: AsyncSession,
        principal: Principal,
        settings: Settings,
    ) -> Response[Any]:
        org: Organization = await organizations.get(organization_id)
        form = await read_form(request)
        errors = FormErrors()
        data = new_user_fields(form, [Role.ORG_ADMIN], errors)
        if not errors:
            async with catching(errors, unique=("email", "A user with this email already exists."), session=db_session):
                user = await scoped(UserService, db_session, org.id).create_user(principal, dict(data))
            if not errors:
                flash(request, f"{user.name} <{user.email}> is now an admin of “{org.name}”.", "success")
                return await see_other(db_session, f"{LIST_URL}/{org.id}")
        data.pop("password", None)
        return await self._detail_page(
            organization_id, organizations, db_session, 1, settings, form=data, errors=errors, status=422
        )
