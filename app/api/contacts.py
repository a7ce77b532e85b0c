"""REST controllers of contacts (with CSV import/export) and categories."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

import msgspec
from advanced_alchemy.filters import LimitOffset, OrderBy
from advanced_alchemy.service import OffsetPagination
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import Limit, Offset, changes
from app.config import Settings
from app.contacts import csvio, schemas
from app.contacts.fields import FieldError, check_region
from app.contacts.services import CategoryService, ContactService
from app.errors import ValidationProblem
from app.messaging.links import contact_detail
from app.tenants.auth import session_maker
from app.tenants.deps import acting_organization, org_service, scoped
from app.tenants.guards import requires_org_admin, requires_scope
from app.tenants.principal import Principal

READ = requires_scope("contacts:read")
WRITE = requires_scope("contacts:write")
BY_NAME = OrderBy(field_name="name", sort_order="asc")
# Multipart framing around a file of up to csvio.MAX_BYTES; larger bodies are refused with 413.
IMPORT_BODY_LIMIT = csvio.MAX_BYTES + 256 * 1024

Query = Annotated[
    str | None, Parameter(query="q", max_length=200, description="Words that must each match a name, e-mail or phone.")
]
CategoryFilter = Annotated[UUID | None, Parameter(query="category_id", description="Only contacts in this category.")]
Region = Annotated[
    str | None,
    Parameter(
        query="region",
        min_length=2,
        max_length=2,
        description="Country (ISO 3166 alpha-2) for phone numbers written without +country code, e.g. GB.",
    ),
]


@dataclass
class ContactImport:
    file: UploadFile


class ContactController(Controller):
    path = "/contacts"
    tags = ["contacts"]
    guards = [READ]
    dependencies = {"contacts": org_service(ContactService, what="The contact list")}

    @get("", summary="List contacts (search with q, filter by category_id)")
    async def list_contacts(
        self,
        contacts: ContactService,
        limit: Limit = 50,
        offset: Offset = 0,
        q: Query = None,
        category_id: CategoryFilter = None,
    ) -> OffsetPagination[schemas.Contact]:
        items, total = await contacts.page(LimitOffset(limit, offset), q=q, category_id=category_id)
        return OffsetPagination(items=items, total=total, limit=limit, offset=offset)

    @post("", summary="Create a contact", guards=[WRITE])
    async def create_contact(
        self, contacts: ContactService, data: schemas.ContactCreate, settings: Settings
    ) -> schemas.ContactDetail:
        contact = await contacts.create(msgspec.structs.asdict(data))
        return await contact_detail(contacts, settings, contact)

    @post(
        "/import",
        summary="Import contacts from CSV (multipart field `file`); answers counts and per-row errors",
        description=(
            "The file is checked as a whole first (422 naming what is wrong: encoding, columns, size, more than "
            f"{csvio.MAX_COLUMNS} columns or {csvio.MAX_CATEGORIES_PER_FILE} different categories). Rows are then "
            f"saved {csvio.CHUNK} at a time, each batch committed on its own: the report lists every row that was "
            "not saved with the reason, and the rows it does not list are saved. Importing the same file again "
            "is safe (rows match the contacts they created). 503 with Retry-After when the database is busy."
        ),
        guards=[WRITE],
        status_code=200,
        request_max_body_size=IMPORT_BODY_LIMIT,
    )
    async def import_contacts(
        self,
        db_session: AsyncSession,
        principal: Principal,
        data: Annotated[ContactImport, Body(media_type=RequestEncodingType.MULTI_PART)],
        region: Region = None,
    ) -> schemas.ImportReport:
        try:
            default_region = check_region(region) if region else None
        except FieldError as exc:
            raise ValidationProblem(str(exc), "region") from None
        org = acting_organization(principal, what="The contact list")
        contacts = scoped(ContactService, db_session, org, default_region=default_region)
        return await csvio.import_file(contacts, await data.file.read(csvio.MAX_BYTES + 1))

    @get("/export", summary="Export contacts as CSV (same columns as the import, plus id)", media_type="text/csv")
    async def export_contacts(
        self,
        request: Request[Any, Any, Any],
        contacts: ContactService,
        q: Query = None,
        category_id: CategoryFilter = None,
    ) -> Stream:
        return Stream(
            csvio.export_download(contacts, session_maker(request), q=q, category_id=category_id),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="contacts.csv"'},
        )

    @get("/{contact_id:uuid}", summary="Get a contact (with its Telegram link)")
    async def get_contact(
        self, contacts: ContactService, contact_id: UUID, settings: Settings
    ) -> schemas.ContactDetail:
        return await contact_detail(contacts, settings, await contacts.get(contact_id))

    @post(
        "/{contact_id:uuid}/opt-out",
        summary="Opt a contact out of every service of the organization (org admins)",
        guards=[WRITE, requires_org_admin],
        status_code=200,
    )
    async def opt_out(self, contacts: ContactService, contact_id: UUID, settings: Settings) -> schemas.ContactDetail:
        return await contact_detail(contacts, settings, await contacts.set_opt_out(contact_id, True))

    @post(
        "/{contact_id:uuid}/opt-in",
        summary="Opt a contact back in (org admins only: a user may not re-subscribe someone)",
        guards=[WRITE, requires_org_admin],
        status_code=200,
    )
    async def opt_in(self, contacts: ContactService, contact_id: UUID, settings: Settings) -> schemas.ContactDetail:
        return await contact_detail(contacts, settings, await contacts.set_opt_out(contact_id, False))

    @patch("/{contact_id:uuid}", summary="Update a contact", guards=[WRITE])
    async def update_contact(
        self,
        contacts: ContactService,
        contact_id: UUID,
        data: schemas.ContactUpdate,
        settings: Settings,
    ) -> schemas.ContactDetail:
        contact = await contacts.update_contact(contact_id, changes(data))
        return await contact_detail(contacts, settings, contact)

    @delete("/{contact_id:uuid}", summary="Delete a contact", guards=[WRITE])
    async def delete_contact(self, contacts: ContactService, contact_id: UUID) -> None:
        await contacts.remove(contact_id)


class CategoryController(Controller):
    path = "/categories"
    tags = ["categories"]
    guards = [READ]
    dependencies = {"categories": org_service(CategoryService, what="The category list")}

    @get("", summary="List categories (by name)")
    async def list_categories(
        self, categories: CategoryService, limit_offset: LimitOffset
    ) -> OffsetPagination[schemas.Category]:
        items, total = await categories.list_and_count(limit_offset, BY_NAME)
        return categories.to_schema(items, total, filters=[limit_offset], schema_type=schemas.Category)

    @post("", summary="Create a category", guards=[WRITE])
    async def create_category(self, categories: CategoryService, data: schemas.CategoryCreate) -> schemas.Category:
        category = await categories.create(msgspec.structs.asdict(data))
        return categories.to_schema(category, schema_type=schemas.Category)

    @get("/{category_id:uuid}", summary="Get a category")
    async def get_category(self, categories: CategoryService, category_id: UUID) -> schemas.Category:
        return categories.to_schema(await categories.get(category_id), schema_type=schemas.Category)

    @patch("/{category_id:uuid}", summary="Rename or describe a category", guards=[WRITE])
    async def update_category(
        self, categories: CategoryService, category_id: UUID, data: schemas.CategoryUpdate
    ) -> schemas.Category:
        category = await categories.update_category(category_id, changes(data))
        return categories.to_schema(category, schema_type=schemas.Category)

    @delete("/{category_id:uuid}", summary="Delete a category (its contacts stay)", guards=[WRITE])
    async def delete_category(self, categories: CategoryService, category_id: UUID) -> None:
        await categories.remove(category_id)
