"""Org admin pages: the users of the admin's own organization."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from advanced_alchemy.exceptions import DuplicateKeyError, IntegrityError
from litestar import Controller, Response, get, post
from litestar.di import Provide
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, Forbidden, ValidationProblem
from app.tenants.guards import requires_org_admin
from app.tenants.models import Organization, Role
from app.tenants.principal import Principal
from app.tenants.services import UserService
from app.web.common import (
    NEWEST,
    ROLE_LABELS,
    FormErrors,
    Page,
    limit_offset,
    org_of,
    page,
    provide_page_number,
    read_form,
    see_other,
    text,
    wants_fragment,
)
from app.web.forms import new_user_fields

LIST_URL = "/users"
ASSIGNABLE = (Role.USER, Role.ORG_ADMIN)


def provide_org_users(db_session: AsyncSession, principal: Principal) -> UserService:
    """Always the caller's own organization: another organization's user is simply not found (404)."""
    return UserService(session=db_session, organization_id=org_of(principal))


def flash_fragment(message: str, category: str = "error") -> Response[Any]:
    """For an HTMX row action that cannot be applied: show the message, leave the row as it is."""
    return page(
        "partials/_flash_message.html",
        {"message": message, "category": category},
        headers={"HX-Retarget": "#flashes", "HX-Reswap": "innerHTML"},
    )


class UserPages(Controller):
    path = LIST_URL
    guards = [requires_org_admin]
    dependencies = {
        "users": Provide(provide_org_users, sync_to_thread=False),
        "page_number": Provide(provide_page_number, sync_to_thread=False),
    }

    async def _list_page(
        self,
        request: HTMXRequest,
        users: UserService,
        db_session: AsyncSession,
        page_number: int,
        *,
        form: dict[str, Any] | None = None,
        errors: FormErrors | None = None,
        status: int = 200,
    ) -> Response[Any]:
        items, total = await users.list_and_count(limit_offset(page_number), NEWEST)
        listing = Page(items=items, total=total, number=page_number, url=LIST_URL, target="user-list")
        context = {
            "users": listing,
            "org": await db_session.get(Organization, users.organization_id),
            "roles": [(r.value, ROLE_LABELS[r.value]) for r in ASSIGNABLE],
            "form": form or {"email": "", "name": "", "role": Role.USER.value},
            "errors": errors or FormErrors(),
        }
        if wants_fragment(request, "user-list"):
            return page("partials/_user_table.html", context)
        return page("users/list.html", context, status=status)

    @get("/", name="users")
    async def list_users(
        self, request: HTMXRequest, users: UserService, db_session: AsyncSession, page_number: int
    ) -> Response[Any]:
        return await self._list_page(request, users, db_session, page_number)

    @post("/")
    async def create_user(
        self, request: HTMXRequest, users: UserService, db_session: AsyncSession, principal: Principal
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        data = new_user_fields(form, ASSIGNABLE, errors)
        if not errors:
            try:
                user = await users.create_user(principal, dict(data))
            except (ValidationProblem, Forbidden) as exc:
                errors.add(getattr(exc, "field", None) or "role", getattr(exc, "detail", None) or str(exc))
            except Conflict as exc:
                errors.add("email", str(exc))
            except (DuplicateKeyError, IntegrityError):
                await db_session.rollback()
                errors.add("email", "A user with this email already exists.")
            else:
                flash(request, f"{user.name} <{user.email}> can now sign in as {ROLE_LABELS[user.role]}.", "success")
                return await see_other(db_session, LIST_URL)
        data.pop("password", None)
        return await self._list_page(request, users, db_session, 1, form=data, errors=errors, status=422)

    @get("/{user_id:uuid}", name="user")
    async def user_detail(self, user_id: UUID, users: UserService) -> Response[Any]:
        user = await users.get(user_id)
        roles = [(r.value, ROLE_LABELS[r.value]) for r in ASSIGNABLE]
        return page("users/detail.html", {"user": user, "roles": roles})

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
                flash(request, f"{user.name} is now {ROLE_LABELS[user.role]}.", "success")
                if wants_fragment(request):
                    await db_session.commit()
                    roles = [(r.value, ROLE_LABELS[r.value]) for r in ASSIGNABLE]
                    return page("partials/_user_row.html", {"user": user, "roles": roles, "oob_flashes": True})
                return await see_other(db_session, back)
        await users.get(user_id)  # another organization's user: 404, not a message
        if wants_fragment(request):
            return flash_fragment(problem)
        flash(request, problem, "error")
        return await see_other(None, back)

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
            if wants_fragment(request):
                return flash_fragment(str(exc))
            flash(request, str(exc), "error")
            return await see_other(None, LIST_URL)
        flash(request, f"{label} has been removed.", "success")
        if wants_fragment(request):
            await db_session.commit()
            return page("partials/_oob_flashes.html", {})
        return await see_other(db_session, LIST_URL)
