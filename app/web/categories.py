"""Organization pages: the categories that group contacts (list, create, rename, delete)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from advanced_alchemy.exceptions import DuplicateKeyError, IntegrityError
from litestar import Controller, Response, get, post
from litestar.di import Provide
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts.models import Category
from app.contacts.services import CategoryService, count_contacts_per_category
from app.errors import Conflict, ValidationProblem
from app.tenants.guards import requires_scope
from app.tenants.principal import Principal
from app.web.common import (
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
from app.web.scoped import BY_NAME, field_errors, org_id

LIST_URL = "/categories"
READ = requires_scope("contacts:read")
WRITE = requires_scope("contacts:write")
NAME_LIMIT = 100
DESCRIPTION_LIMIT = 500


def provide_categories(db_session: AsyncSession, principal: Principal) -> CategoryService:
    return CategoryService(session=db_session, organization_id=org_id(principal, "Categories"))


def read_category_form(form: Any, errors: FormErrors) -> dict[str, Any]:
    """The name (and the description, when the form has one) of a category."""
    name = text(form, "name", NAME_LIMIT * 4)
    if not name:
        errors.add("name", "Enter a name for the category.")
    elif len(name) > NAME_LIMIT:
        errors.add("name", f"At most {NAME_LIMIT} characters.")
    data: dict[str, Any] = {"name": name}
    if "description" in form:
        description = text(form, "description", DESCRIPTION_LIMIT * 4)
        if len(description) > DESCRIPTION_LIMIT:
            errors.add("description", f"At most {DESCRIPTION_LIMIT} characters.")
        data["description"] = description or None
    return data


async def contact_counts(categories: CategoryService, items: Any) -> dict[UUID, int]:
    """How many contacts each category of the page holds (one query for the page)."""
    return await count_contacts_per_category(categories, [c.id for c in items])


class CategoryPages(Controller):
    path = LIST_URL
    guards = [READ]
    dependencies = {
        "categories": Provide(provide_categories, sync_to_thread=False),
        "page_number": Provide(provide_page_number, sync_to_thread=False),
    }

    async def _list_page(
        self,
        request: HTMXRequest,
        categories: CategoryService,
        page_number: int,
        *,
        form: dict[str, Any] | None = None,
        errors: FormErrors | None = None,
        status: int = 200,
    ) -> Response[Any]:
        items, total = await categories.list_and_count(limit_offset(page_number), BY_NAME)
        listing = Page(items=items, total=total, number=page_number, url=LIST_URL, target="category-list")
        context = {
            "categories": listing,
            "counts": await contact_counts(categories, items),
            "form": form or {"name": "", "description": ""},
            "errors": errors or FormErrors(),
        }
        if wants_fragment(request, "category-list"):
            return page("partials/_category_table.html", context)
        return page("categories/list.html", context, status=status)

    @get("/", name="categories")
    async def list_categories(
        self, request: HTMXRequest, categories: CategoryService, page_number: int
    ) -> Response[Any]:
        return await self._list_page(request, categories, page_number)

    @post("/", guards=[WRITE])
    async def create_category(
        self, request: HTMXRequest, categories: CategoryService, db_session: AsyncSession
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        data = read_category_form(form, errors)
        if not errors:
            try:
                category = await categories.create(dict(data))
            except ValidationProblem as exc:
                field_errors(exc, errors, "name")
            except Conflict as exc:
                errors.add("name", str(exc))
            except (DuplicateKeyError, IntegrityError):
                await db_session.rollback()
                errors.add("name", "A category with this name already exists.")
            else:
                flash(request, f"Category “{category.name}” created.", "success")
                return await see_other(db_session, LIST_URL)
        shown = {"name": data["name"], "description": data.get("description") or ""}
        return await self._list_page(request, categories, 1, form=shown, errors=errors, status=422)

    async def _row(self, categories: CategoryService, category: Category, **extra: Any) -> Response[Any]:
        counts = await contact_counts(categories, [category])
        return page("partials/_category_row.html", {"category": category, "counts": counts, **extra})

    @post("/{category_id:uuid}/rename", guards=[WRITE])
    async def rename_category(
        self, request: HTMXRequest, category_id: UUID, categories: CategoryService, db_session: AsyncSession
    ) -> Response[Any]:
        category = await categories.get(category_id)
        form = await read_form(request)
        errors = FormErrors()
        data = read_category_form(form, errors)
        if not errors:
            try:
                category = await categories.update_category(category_id, data)
            except ValidationProblem as exc:
                field_errors(exc, errors, "name")
            except Conflict as exc:
                errors.add("name", str(exc))
            except (DuplicateKeyError, IntegrityError):
                await db_session.rollback()
                errors.add("name", "A category with this name already exists.")
            else:
                flash(request, f"Category renamed to “{category.name}”.", "success")
                if wants_fragment(request):
                    await db_session.commit()
                    return await self._row(categories, category, oob_flashes=True)
                return await see_other(db_session, LIST_URL)
        await db_session.rollback()
        category = await categories.get(category_id)
        if wants_fragment(request):
            response = await self._row(categories, category, row_errors=errors, typed=data)
            response.status_code = 422
            return response
        problem = errors.get("name") or errors.get("description") or errors.form or "The category was not renamed."
        flash(request, problem, "error")
        return await see_other(None, LIST_URL)

    @post("/{category_id:uuid}/remove", guards=[WRITE])
    async def remove_category(
        self, request: HTMXRequest, category_id: UUID, categories: CategoryService, db_session: AsyncSession
    ) -> Response[Any]:
        category = await categories.get(category_id)
        name = category.name
        await categories.remove(category_id)
        flash(request, f"Category “{name}” deleted; its contacts are kept.", "success")
        if wants_fragment(request):
            await db_session.commit()
            return page("partials/_oob_flashes.html", {})
        return await see_other(db_session, LIST_URL)
