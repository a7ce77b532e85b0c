"""Organization pages: contacts (list, search, create, edit, delete), CSV import and export, conversations."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from advanced_alchemy.exceptions import DuplicateKeyError, IntegrityError
from advanced_alchemy.filters import LimitOffset
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict, UploadFile
from litestar.params import Parameter
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Stream
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.contacts import csvio
from app.contacts.fields import FieldError, check_region
from app.contacts.models import Contact
from app.contacts.schemas import ContactCreate
from app.contacts.services import CategoryService, ContactService
from app.errors import ValidationProblem
from app.messaging.links import telegram_link_for
from app.messaging.services import ServicechainService
from app.tenants.auth import session_maker
from app.tenants.deps import org_service, scoped
from app.tenants.guards import requires_scope
from app.tenants.principal import Principal
from app.textfields import max_lengths
from app.web.common import (
    BY_NAME,
    FormErrors,
    ListView,
    catching,
    checked,
    done,
    form_values,
    page,
    parse_uuid,
    read_form,
    refused,
    see_other,
    text,
    wants_fragment,
)
from app.web.conversations import conversation_context, may_opt_in, new_reply_key

LIST_URL = "/contacts"
READ = requires_scope("contacts:read")
WRITE = requires_scope("contacts:write")
# The request schema's limits (app.contacts.schemas), checked here so the form says so next to the field.
TEXT_LIMITS = max_lengths(ContactCreate)
CONFLICT = "This contact could not be saved: it conflicts with existing data."
EMPTY_FORM: dict[str, Any] = {
    **{name: "" for name in TEXT_LIMITS},
    "category_ids": [],
    "servicechain_id": "",
    "opted_out": False,
}


LIST = ListView(
    url=LIST_URL,
    target="contact-list",
    name="contacts",
    template="contacts/list.html",
    fragment="partials/_contact_table.html",
    order=None,  # the search's own order: newest first
)


def read_contact_form(form: FormMultiDict, errors: FormErrors) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the fields for the contact service, the form as typed to show it again); problems go to ``errors``."""
    data: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    for name, limit in TEXT_LIMITS.items():
        raw = form.get(name)
        value = raw[: limit * 4] if isinstance(raw, str) else ""
        shown[name] = value
        if len(value.strip()) > limit:
            errors.add(name, f"At most {limit} characters.")
        data[name] = value
    raw_ids = form_values(form, "category_ids")
    category_ids = [parse_uuid(v) for v in raw_ids]
    if any(i is None for i in category_ids):
        errors.add("category_ids", "Choose categories from the list.")
    data["category_ids"] = [i for i in category_ids if i is not None]
    shown["category_ids"] = raw_ids
    raw_chain = text(form, "servicechain_id")
    chain_id = parse_uuid(raw_chain)
    if raw_chain and chain_id is None:
        errors.add("servicechain_id", "Choose a servicechain from the list.")
    data["servicechain_id"] = chain_id
    shown["servicechain_id"] = raw_chain
    data["opted_out"] = shown["opted_out"] = checked(form, "opted_out")
    return data, shown


def export_url(params: dict[str, str]) -> str:
    query = urlencode({k: v for k, v in params.items() if v})
    return f"{LIST_URL}/export?{query}" if query else f"{LIST_URL}/export"


def contact_form_state(contact: Contact) -> dict[str, Any]:
    state: dict[str, Any] = {name: getattr(contact, name) or "" for name in TEXT_LIMITS}
    state["category_ids"] = [str(i) for i in contact.category_ids]
    state["servicechain_id"] = str(contact.servicechain_id or "")
    state["opted_out"] = bool(contact.opted_out)
    return state


async def _choices(contacts: ContactService) -> dict[str, Any]:
    """The categories and servicechains a contact form offers."""
    session = contacts.repository.session
    categories = await scoped(CategoryService, session, contacts.organization_id).list(BY_NAME)
    chains = await scoped(ServicechainService, session, contacts.organization_id).list(BY_NAME)
    return {
        "category_options": [(str(c.id), c.name) for c in categories],
        "chain_options": [("", "No default chain"), *((str(c.id), c.name) for c in chains)],
    }


class ContactPages(Controller):
    path = LIST_URL
    guards = [READ]
    dependencies = {"contacts": org_service(ContactService, what="The contact list")}

    # ------------------------------------------------------------ list and search

    @get("/", name="contacts")
    async def list_contacts(
        self,
        request: HTMXRequest,
        contacts: ContactService,
        page_number: int,
        q: str | None = Parameter(query="q", default=None, required=False, max_length=200),
        category: str | None = Parameter(query="category_id", default=None, required=False, max_length=64),
    ) -> Response[Any]:
        query = (q or "").strip()
        category_id = parse_uuid(category)
        errors = FormErrors()
        filters: list[Any] | None = None
        try:
            filters = contacts.search_filters(query or None, category_id)
        except ValidationProblem as exc:
            errors.add("q", exc.detail)
        params = {"q": query, "category_id": str(category_id) if category_id else ""}

        async def rows(window: LimitOffset) -> tuple[Any, int]:
            return ([], 0) if filters is None else await contacts.search(*filters, window)

        return await LIST.render(
            request,
            contacts,
            page_number,
            status=422 if errors else 200,
            params=params,
            rows=rows,
            q=query,
            category_id=params["category_id"],
            categories=await contacts.categories.list(BY_NAME),
            errors=errors,
            export_url=export_url(params),
        )

    # ------------------------------------------------------------ create

    @get("/new", name="contact-new", guards=[WRITE])
    async def new_contact(self, contacts: ContactService) -> Response[Any]:
        context = {"form": dict(EMPTY_FORM), "errors": FormErrors(), "contact": None, **await _choices(contacts)}
        return page("contacts/form.html", context)

    @post("/", guards=[WRITE])
    async def create_contact(
        self, request: HTMXRequest, contacts: ContactService, db_session: AsyncSession
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        data, shown = read_contact_form(form, errors)
        if not errors:
            async with catching(errors, "first_name", unique=(None, CONFLICT), session=db_session):
                contact = await contacts.create(data)
            if not errors:
                flash(request, f"{contact.display_name} is saved.", "success")
                return await see_other(db_session, f"{LIST_URL}/{contact.id}")
        context = {"form": shown, "errors": errors, "contact": None, **await _choices(contacts)}
        return page("contacts/form.html", context, status=422)

    # ------------------------------------------------------------ CSV import and export

    @get("/import", name="contact-import", guards=[WRITE])
    async def import_page(self) -> Response[Any]:
        context = {"errors": FormErrors(), "report": None, "region": "", "columns": csvio.EXPORT_COLUMNS}
        return page("contacts/import.html", context)

    @post("/import", guards=[WRITE], request_max_body_size=csvio.MAX_BYTES + 256 * 1024)
    async def import_csv(
        self, request: HTMXRequest, contacts: ContactService, db_session: AsyncSession
    ) -> Response[Any]:
        form = await read_form(request)
        errors = FormErrors()
        region = text(form, "region", 10)
        default_region: str | None = None
        if region:
            try:
                default_region = check_region(region)
            except FieldError as exc:
                errors.add("region", str(exc))
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            errors.add("file", "Choose a CSV file to import.")
        report = None
        filename = ""
        if not errors and isinstance(upload, UploadFile):
            filename = upload.filename
            importing = scoped(ContactService, db_session, contacts.organization_id, default_region=default_region)
            try:
                report = await csvio.import_file(importing, await upload.read(csvio.MAX_BYTES + 1))
            except csvio.CSVFormatError as exc:
                errors.add("file", exc.detail)
        context = {
            "errors": errors,
            "report": report,
            "filename": filename,
            "region": region,
            "columns": csvio.EXPORT_COLUMNS,
        }
        return page("contacts/import.html", context, status=422 if errors else 200)

    @get("/export", name="contact-export")
    async def export_csv(
        self,
        request: Request[Any, Any, Any],
        contacts: ContactService,
        q: str | None = Parameter(query="q", default=None, required=False, max_length=200),
        category: str | None = Parameter(query="category_id", default=None, required=False, max_length=64),
    ) -> Stream:
        query = (q or "").strip() or None
        return Stream(
            csvio.export_download(contacts, session_maker(request), q=query, category_id=parse_uuid(category)),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="contacts.csv"', "Cache-Control": "no-store"},
        )

    # ------------------------------------------------------------ one contact

    @get("/{contact_id:uuid}", name="contact")
    async def contact_detail(
        self,
        request: HTMXRequest,
        contact_id: UUID,
        contacts: ContactService,
        principal: Principal,
        settings: Settings,
        number: str | None = Parameter(query="page", default=None, required=False, max_length=12),
    ) -> Response[Any]:
        contact = await contacts.get(contact_id)
        context = await conversation_context(contacts, contact, principal, number)
        if wants_fragment(request, "conversation"):  # a page of it, or the live update of the newest
            return page("partials/_conversation.html", context)
        session = contacts.repository.session
        chain = None
        if contact.servicechain_id is not None:
            chains = scoped(ServicechainService, session, contacts.organization_id)
            chain = await chains.get_one_or_none(id=contact.servicechain_id)
        link = await telegram_link_for(session, settings, contacts.organization_id, contact.id)
        context.update({"chain": chain, "telegram_link": link, "reply_key": new_reply_key()})
        return page("contacts/detail.html", context)

    @get("/{contact_id:uuid}/edit", name="contact-edit", guards=[WRITE])
    async def edit_contact(self, contact_id: UUID, contacts: ContactService) -> Response[Any]:
        contact = await contacts.get(contact_id)
        context = {
            "form": contact_form_state(contact),
            "errors": FormErrors(),
            "contact": contact,
            **await _choices(contacts),
        }
        return page("contacts/form.html", context)

    @post("/{contact_id:uuid}/edit", guards=[WRITE])
    async def update_contact(
        self,
        request: HTMXRequest,
        contact_id: UUID,
        contacts: ContactService,
        principal: Principal,
        db_session: AsyncSession,
    ) -> Response[Any]:
        contact = await contacts.get(contact_id)
        form = await read_form(request)
        errors = FormErrors()
        data, shown = read_contact_form(form, errors)
        if contact.opted_out and not may_opt_in(principal):
            data["opted_out"] = shown["opted_out"] = True  # only an org admin opts someone back in
        if not errors:
            data["is_unknown"] = False  # someone looked at it and saved it
            async with catching(errors, "first_name"):
                contact = await contacts.update_contact(contact_id, data)
            if not errors:
                flash(request, f"{contact.display_name} is saved.", "success")
                return await see_other(db_session, f"{LIST_URL}/{contact.id}")
            await db_session.rollback()
            contact = await contacts.get(contact_id)
        context = {"form": shown, "errors": errors, "contact": contact, **await _choices(contacts)}
        return page("contacts/form.html", context, status=422)

    @post("/{contact_id:uuid}/remove", guards=[WRITE])
    async def remove_contact(
        self, request: HTMXRequest, contact_id: UUID, contacts: ContactService, db_session: AsyncSession
    ) -> Response[Any]:
        contact = await contacts.get(contact_id)
        label = contact.display_name
        try:
            await contacts.remove(contact_id)
        except (IntegrityError, DuplicateKeyError):
            await db_session.rollback()
            return await refused(request, f"{label} could not be deleted.", f"{LIST_URL}/{contact_id}")
        return await done(request, db_session, f"{label} has been deleted.", LIST_URL)
