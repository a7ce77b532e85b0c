"""Organization pages: the categories that group contacts (list, create, rename, delete)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts.models import Category
from app.contacts.schemas import CategoryCreate
from app.contacts.services import CategoryService, count_contacts_per_category
from app.tenants.deps import org_service
from app.tenants.guards import requires_scope
from app.textfields import max_length
from app.web.common import (
    BY_NAME,
    FormErrors,
    ListView,
    catching,
    done,
    page,
    read_form,
    refused,
    see_other,
    text,
    wants_fragment,
)

LIST_URL = "/categories"
READ = requires_scope("contacts:read")
WRITE = requires_scope("contacts:write")
NAME_LIMIT = max_length(CategoryCreate, "name")
DESCRIPTION_LIMIT = max_length(CategoryCreate, "description")
UNIQUE = ("name", "A category with this name already exists.")
ROW = "partials/_category_row.html"
LIST = ListView(
    url=LIST_URL,
    target="category-list",
    name="categories",
    template="categories/list.html",
    fragment="partials/_category_table.html",
    order=BY_NAME,
    form={"name": "", "description": ""},
)


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


def contact_counts(categories: CategoryService) -> Any:
    """How many contacts each category of the page holds (one query for the page)."""

    async def counts(items: Sequence[Category]) -> dict[str, Any]:
        return {"counts": await count_contacts_per_category(categories, [c.id for c in items])}

    return counts


class CategoryPages(Controller):
    path = LIST_URL
    guards = [READ]
    dependencies = {"categories": org_service(CategoryService, what="Categories")}

    @get("/", name="categories")
    async def list_categories(
        self, request: HTMXRequest, categories: CategoryService, page_number: int
    ) -> Response[Any]:
        return await LIST.render(request, categories, page_number, more=contact_counts(categories))

    @post("/", guards=[WRITE])
    async def create_category(
        self, request: HTMXRequest, categories: CategoryService, db_session: AsyncSession
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        data = read_category_form(form, errors)
        if not errors:
            async with catching(errors, "name", unique=UNIQUE, session=db_session):
                category = await categories.create(dict(data))
            if not errors:
                flash(request, f"Category “{category.name}” created.", "success")
                return await see_other(db_session, LIST_URL)
        shown = {"name": data["name"], "description": data.get("description") or ""}
        return await LIST.render(
            request, categories, 1, more=contact_counts(categories), form=shown, errors=errors, status=422
        )

    async def _row(
        self, categories: CategoryService, category: Category, status: int = 200, **extra: Any
    ) -> Response[Any]:
        context = {"category": category, **await contact_counts(categories)([category]), **extra}
        return page(ROW, context, status=status)

    @post("/{category_id:uuid}/rename", guards=[WRITE])
    async def rename_category(
        self, request: HTMXRequest, category_id: UUID, categories: CategoryService, db_session: AsyncSession
    ) -> Response[Any]:
        category = await categories.get(category_id)
        form = await read_form(request)
        errors = FormErrors()
        data = read_category_form(form, errors)
        if not errors:
            async with catching(errors, "name", unique=UNIQUE, session=db_session):
                category = await categories.update_category(category_id, data)
            if not errors:
                row = {"category": category, **await contact_counts(categories)([category])}
                return await done(request, db_session, f"Category renamed to “{category.name}”.", LIST_URL, ROW, row)
        await db_session.rollback()
        category = await categories.get(category_id)
        if wants_fragment(request):
            return await self._row(categories, category, status=422, row_errors=errors, typed=data)
        problem = errors.get("name") or errors.get("description") or errors.form or "The category was not renamed."
        return await refused(request, problem, LIST_URL)

    @post("/{category_id:uuid}/remove", guards=[WRITE])
    async def remove_category(
        self, request: HTMXRequest, category_id: UUID, categories: CategoryService, db_session: AsyncSession
    ) -> Response[Any]:
        category = await categories.get(category_id)
        name = category.name
        await categories.remove(category_id)
        return await done(request, db_session, f"Category “{name}” deleted; its contacts are kept.", LIST_URL)
