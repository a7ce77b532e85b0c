"""Org admin pages: the users of the admin's own organization."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Forbidden, ValidationProblem
from app.tenants.deps import org_service
from app.tenants.guards import requires_org_admin
from app.tenants.models import Organization, Role
from app.tenants.principal import Principal
from app.tenants.services import UserService
from app.web.common import FormErrors, ListView, catching, done, page, read_form, refused, see_other, text
from app.web.forms import new_user_fields
from app.web.templating import ROLE_LABELS

LIST_URL = "/users"
ASSIGNABLE = (Role.USER, Role.ORG_ADMIN)
ROLES = [(r.value, ROLE_LABELS[r.value]) for r in ASSIGNABLE]
LIST = ListView(
    url=LIST_URL,
    target="user-list",
    name="users",
    template="users/list.html",
    fragment="partials/_user_table.html",
    form={"email": "", "name": "", "role": Role.USER.value},
)


class UserPages(Controller):
    path = LIST_URL
    guards = [requires_org_admin]
    # always the caller's own organization: another organization's user is simply not found (404)
    dependencies = {"users": org_service(UserService, what="The users page")}

    async def _list(
        self, request: HTMXRequest, users: UserService, db_session: AsyncSession, number: int, **kwargs: Any
    ) -> Response[Any]:
        org = await db_session.get(Organization, users.organization_id)
        return await LIST.render(request, users, number, org=org, roles=ROLES, **kwargs)

    @get("/", name="users")
    async def list_users(
        self, request: HTMXRequest, users: UserService, db_session: AsyncSession, page_number: int
    ) -> Response[Any]:
        return await self._list(request, users, db_session, page_number)

    @post("/")
    async def create_user(
        self, request: HTMXRequest, users: UserService, db_session: AsyncSession, principal: Principal
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        data = new_user_fields(form, ASSIGNABLE, errors)
        if not errors:
            async with catching(
                errors,
                "role",
                also=(Forbidden,),
                unique=("email", "A user with this email already exists."),
                session=db_session,
            ):
                user = await users.create_user(principal, dict(data))
            if not errors:
                flash(request, f"{user.name} <{user.email}> can now sign in as {ROLE_LABELS[user.role]}.", "success")
                return await see_other(db_session, LIST_URL)
        data.pop("password", None)
        return await self._list(request, users, db_session, 1, form=data, errors=errors, status=422)

    @get("/{user_id:uuid}", name="user")
    async def user_detail(self, user_id: UUID, users: UserService) -> Response[Any]:
        return page("users/detail.html", {"user": await users.get(user_id), "roles": ROLES})

    @post("/{user_id:uuid}/role")
    async def change_role(
        self,
        request: HTMXRequest,
        user_id: UUID,
        users: UserService,
        db_session: AsyncSession,
        principal: Principal,
    ) -> Response[Any]:
        form = await read_form(request)
        role = text(form, "role")
        back = f"{LIST_URL}/{user_id}" if text(form, "return_to") == "detail" else LIST_URL
        if role not in {r.value for r in ASSIGNABLE}:
            problem = "Choose one of the roles offered."
        else:
            try:
                user = await users.update_user(principal, user_id, {"role": role})
            except (Forbidden, ValidationProblem) as exc:
                problem = getattr(exc, "detail", None) or str(exc)
            else:
                message = f"{user.name} is now {ROLE_LABELS[user.role]}."
                return await done(
                    request, db_session, message, back, "partials/_user_row.html", {"user": user, "roles": ROLES}
                )
        await users.get(user_id)  # another organization's user: 404, not a message
        return await refused(request, problem, back)

    @post("/{user_id:uuid}/remove")
    async def remove_user(
        self,
        request: HTMXRequest,
        user_id: UUID,
        users: UserService,
        db_session: AsyncSession,
        principal: Principal,
    ) -> Response[Any]:
        user = await users.get(user_id)
        label = f"{user.name} <{user.email}>"
        try:
            await users.remove_user(principal, user_id)
        except Forbidden as exc:
            return await refused(request, str(exc), LIST_URL)
        return await done(request, db_session, f"{label} has been removed.", LIST_URL)
