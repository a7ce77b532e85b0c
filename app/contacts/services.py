"""Business rules of contacts and categories, on organization-scoped repositories.

Both services are built for one organization (``ContactService(session, organization_id)``): an id of
another organization is not found, exactly like an id that does not exist. Pages and the API call the
same methods:

- ``ContactService.create(dict)`` / ``update(dict, item_id=…)`` / ``delete(id)`` / ``get(id)`` apply the
  rules below (through the ``to_model_on_*`` hooks and :meth:`ContactService.update_contact`);
- :meth:`ContactService.search` lists with ``q`` and ``category_id``;
- :meth:`ContactService.set_opt_out`, :meth:`ContactService.find_by_address` and
  :meth:`ContactService.create_unknown` serve the messaging pipeline (STOP/START, inbound senders).

Rules: phones are stored in E.164 (see ``docs/decisions/0006-phone-numbers.md``), e-mail addresses
lowercased, blank text becomes null, a contact needs a name or an address, ``category_ids`` must all be
categories of the organization (others answer 422 naming them, as if they did not exist), and
``opted_out`` stamps ``opted_out_at`` when it changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal
from uuid import UUID, uuid4

import msgspec
from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.filters import LimitOffset, OrderBy, StatementFilter
from advanced_alchemy.service import is_dict
from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import utcnow
from app.contacts import schemas
from app.contacts.fields import (
    FieldError,
    clean_text,
    has_control_chars,
    normalise_email,
    normalise_phone,
    normalise_telegram_chat_id,
)
from app.contacts.listing import contact_page
from app.contacts.models import Category, Contact, contact_category
from app.db.scoping import OrgScopedRepository, OrgScopedService, references_own_row
from app.errors import Conflict, FieldErrors, ValidationProblem
from app.webhooks.outbox import emit

TEXT_FIELDS = ("title", "first_name", "surname")
IDENTIFYING_FIELDS = ("first_name", "surname", "phone", "email", "telegram_chat_id")
NEEDS_IDENTITY = "A contact needs a name, a phone number, an e-mail address or a Telegram chat id."
AddressField = Literal["phone", "email", "telegram_chat_id"]
MAX_QUERY_TERMS = 8
_PHONE_NOISE = re.compile(r"[\s+\-().]")
NEWEST: tuple[OrderBy, OrderBy] = (
    OrderBy(field_name="created_at", sort_order="desc"),
    OrderBy(field_name="id", sort_order="desc"),
)


# ---------------------------------------------------------------- categories


class CategoryRepository(OrgScopedRepository[Category]):
    model_type = Category


class CategoryService(OrgScopedService[Category]):
    """Categories of one organization. Names are unique per organization, ignoring case."""

    repository_type = CategoryRepository

    async def _check_name(self, name: str, *, exclude: UUID | None = None) -> None:
        clash = [func.lower(Category.name) == name.lower()]
        if exclude is not None:
            clash.append(Category.id != exclude)
        if await self.exists(*clash):
            raise Conflict(f"A category named {name!r} already exists.")

    def _clean(self, data: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, str] = {}
        for field in ("name", "description"):
            if field in data:
                try:
                    data[field] = clean_text(data[field])
                except FieldError as exc:
                    errors[field] = str(exc)
        if "name" in data and data["name"] is None and "name" not in errors:
            errors["name"] = "A category needs a name."
        if errors:
            raise FieldErrors(errors)
        return data

    async def to_model_on_create(self, data: Any) -> Any:
        if is_dict(data):
            data = self._clean(dict(data))
            await self._check_name(data["name"])
        return data

    async def to_model_on_update(self, data: Any) -> Any:
        if is_dict(data):
            data = self._clean(dict(data))
        return data

    async def update_category(self, category_id: UUID, changes: dict[str, Any]) -> Category:
        category = await self.get(category_id)
        changes = self._clean(dict(changes))
        if "name" in changes and changes["name"] != category.name:
            await self._check_name(changes["name"], exclude=category.id)
        for key, value in changes.items():
            setattr(category, key, value)
        return await self.repository.update(category)

    async def remove(self, category_id: UUID) -> None:
        """Delete a category; its contacts stay, they just leave it."""
        category = await self.get(category_id)
        await self.repository.session.execute(
            delete(contact_category).where(contact_category.c.category_id == category.id)
        )
        await self.repository.delete(category.id)

    async def resolve(self, ids: Iterable[UUID]) -> list[Category]:
        """The categories of these ids; any id that is not one of this organization's → 422 naming it."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        found = {c.id: c for c in await self.list(Category.id.in_(wanted))}
        missing = [str(i) for i in wanted if i not in found]
        if missing:
            raise FieldErrors({"category_ids": f"Unknown category ids: {', '.join(missing)}."})
        return [found[i] for i in wanted]

    async def ids_by_name(self, names: Iterable[str], *, create: bool = True) -> dict[str, UUID]:
        """Category ids by lowercased name, creating the missing ones (used by the CSV import).

        One lookup, then one multi-row INSERT of the missing names (through the organization-scoped
        repository, which stamps them): never statements per category.
        """
        wanted: dict[str, str] = {}
        for name in names:
            if name and name.strip():
                wanted.setdefault(name.strip().lower(), name.strip())  # the first spelling wins
        if not wanted:
            return {}
        found: dict[str, UUID] = {}
        rows = await self.repository.session.execute(
            self.repository.statement.with_only_columns(Category.id, Category.name, maintain_column_froms=True).where(
                func.lower(Category.name).in_(list(wanted))
            )
        )
        for category_id, name in rows.all():
            found.setdefault(name.lower(), category_id)
        missing = [name for key, name in wanted.items() if key not in found] if create else []
        if missing:
            created = [{"id": uuid4(), **self._clean({"name": name})} for name in missing]
            await self.repository.insert_many(created)
            found.update((row["name"].lower(), row["id"]) for row in created)
        return found


# ---------------------------------------------------------------- contacts


def contact_payload(contact: Contact) -> dict[str, Any]:
    """A contact as the API returns it, as JSON builtins (the ``data`` of the contact webhook events)."""
    return msgspec.to_builtins(msgspec.convert(contact, schemas.Contact, from_attributes=True))


async def count_contacts_per_category(categories: CategoryService, category_ids: Iterable[UUID]) -> dict[UUID, int]:
    """How many contacts each of these categories of the organization holds, in one query."""
    ids = list(category_ids)
    if not ids:
        return {}
    rows = await categories.repository.session.execute(
        select(contact_category.c.category_id, func.count())
        .join(Category, Category.id == contact_category.c.category_id)
        .where(Category.organization_id == categories.organization_id, contact_category.c.category_id.in_(ids))
        .group_by(contact_category.c.category_id)
    )
    counts = {category_id: int(n) for category_id, n in rows.all()}
    return {i: counts.get(i, 0) for i in ids}


class ContactRepository(OrgScopedRepository[Contact]):
    model_type = Contact


class ContactService(OrgScopedService[Contact]):
    """Contacts of one organization."""

    repository_type = ContactRepository

    def __init__(
        self, session: AsyncSession, organization_id: UUID, *, default_region: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(session=session, organization_id=organization_id, **kwargs)
        self.default_region = default_region  # else VOLUBLE_DEFAULT_REGION, else international format only

    @property
    def categories(self) -> CategoryService:
        return CategoryService(session=self.repository.session, organization_id=self.organization_id)

    # ------------------------------------------------------------ normalisation

    def normalise_fields(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """(normalised data, field errors) for the plain fields present in ``data``; never raises."""
        out = dict(data)
        errors: dict[str, str] = {}
        for field in (*TEXT_FIELDS, "notes", "phone", "email", "telegram_chat_id"):
            if field not in out:
                continue
            try:
                text = clean_text(out[field], multiline=field == "notes")
                if text is not None and field == "phone":
                    text = normalise_phone(text, self.default_region)
                elif text is not None and field == "email":
                    text = normalise_email(text)
                elif text is not None and field == "telegram_chat_id":
                    text = normalise_telegram_chat_id(text)
                out[field] = text
            except FieldError as exc:
                errors[field] = str(exc)
        return out, errors

    async def _prepare(self, data: dict[str, Any]) -> dict[str, Any]:
        out, errors = self.normalise_fields(data)
        if "category_ids" in out:
            try:
                out["categories"] = await self.categories.resolve(out.pop("category_ids") or [])
            except FieldErrors as exc:
                errors.update(exc.errors)
        if out.get("servicechain_id") is not None:
            session, chain_id = self.repository.session, out["servicechain_id"]
            if not await references_own_row(session, Contact.servicechain_id, self.organization_id, chain_id):
                errors["servicechain_id"] = "No such servicechain in this organization."
        if errors:
            raise FieldErrors(errors)
        return out

    @staticmethod
    def _require_identity(values: dict[str, Any]) -> None:
        if not any(values.get(field) for field in IDENTIFYING_FIELDS):
            raise FieldErrors({"first_name": NEEDS_IDENTITY}, detail=NEEDS_IDENTITY)

    async def to_model_on_create(self, data: Any) -> Any:
        if is_dict(data):
            data = await self._prepare(data)
            self._require_identity(data)
            data.setdefault("categories", [])  # loaded, so category_ids can be read without a query
            if data.get("opted_out"):
                data.setdefault("opted_out_at", utcnow())
            else:
                data.pop("opted_out_via", None)
        return data

    async def to_model_on_update(self, data: Any) -> Any:
        if is_dict(data):
            data = await self._prepare(data)
        return data

    # ------------------------------------------------------------ writes

    async def update(self, data: Any, item_id: Any | None = None, **kwargs: Any) -> Contact:
        """A dict with ``item_id`` goes through :meth:`update_contact` (the rules need the current row)."""
        if item_id is not None and is_dict(data):
            return await self.update_contact(item_id, data, auto_commit=kwargs.get("auto_commit"))
        return await super().update(data, item_id=item_id, **kwargs)

    async def update_contact(
        self, contact_id: UUID, changes: dict[str, Any], *, auto_commit: bool | None = None
    ) -> Contact:
        contact = await self.get(contact_id)
        changes = await self._prepare(changes)
        self._require_identity({f: changes.get(f, getattr(contact, f)) for f in IDENTIFYING_FIELDS})
        opted_out = changes.pop("opted_out", None)
        changes.pop("opted_out_at", None)
        via = changes.pop("opted_out_via", None)
        for key, value in changes.items():
            setattr(contact, key, value)
        opt_changed = opted_out is not None and self._apply_opt_out(contact, bool(opted_out), via)
        contact = await self.repository.update(contact, auto_commit=auto_commit)
        if opt_changed:
            self._emit_opt(contact)
        return contact

    @staticmethod
    def _apply_opt_out(contact: Contact, opted_out: bool, via: str | None) -> bool:
        """Set the opt-out state; True when it changed. Repeating the current state changes nothing."""
        if bool(contact.opted_out) == opted_out:
            return False
        contact.opted_out = opted_out
        contact.opted_out_at = utcnow() if opted_out else None
        contact.opted_out_via = via if opted_out else None
        return True

    async def set_opt_out(self, contact_id: UUID, opted_out: bool, *, via: str | None = None) -> Contact:
        """Opt a contact out of (or back into) every service of the organization.

        ``via`` names the service a STOP came through; a manual opt-out (API, page, import) has none.
        """
        contact = await self.get(contact_id)
        if self._apply_opt_out(contact, opted_out, via):
            contact = await self.repository.update(contact)
            self._emit_opt(contact)
        return contact

    def _emit_opt(self, contact: Contact) -> None:
        """The ``contact.opted_out`` / ``contact.opted_in`` webhook event, in this transaction."""
        kind = "contact.opted_out" if contact.opted_out else "contact.opted_in"
        emit(self.repository.session, self.organization_id, kind, contact_payload(contact))

    async def remove(self, contact_id: UUID) -> None:
        await self.delete(contact_id)

    # ------------------------------------------------------------ reads

    def search_filters(self, q: str | None = None, category_id: UUID | None = None) -> list[ColumnElement[bool]]:
        """Where-clauses for ``q`` and a category.

        Every word of ``q`` must match (case-insensitively, anywhere) a first name, surname, e-mail or phone;
        a ``q`` made only of digits and phone punctuation (``+44 20 7946``) matches phones, however spaced.
        """
        clauses: list[ColumnElement[bool]] = []
        if q is not None:
            if has_control_chars(q):
                raise ValidationProblem("The search must not contain control characters.", "q")
            compact = _PHONE_NOISE.sub("", q)
            if compact.isascii() and compact.isdigit() and len(compact) >= 3:  # a phone number, however it is spaced
                clauses.append(Contact.phone.contains(compact, autoescape=True))
            else:
                for term in q.lower().split()[:MAX_QUERY_TERMS]:
                    clauses.append(
                        or_(
                            func.lower(Contact.first_name).contains(term, autoescape=True),
                            func.lower(Contact.surname).contains(term, autoescape=True),
                            Contact.email.contains(term, autoescape=True),
                            Contact.phone.contains(term, autoescape=True),
                        )
                    )
        if category_id is not None:
            clauses.append(Contact.categories.any(Category.id == category_id))
        return [and_(*clauses)] if clauses else []

    async def search(
        self,
        *filters: StatementFilter | ColumnElement[bool],
        q: str | None = None,
        category_id: UUID | None = None,
    ) -> tuple[Sequence[Contact], int]:
        """A page of contacts, newest first, matching ``q`` and ``category_id`` (plus any ``filters``)."""
        return await self.list_and_count(*self.search_filters(q, category_id), *filters, *NEWEST)

    async def page(
        self, page: LimitOffset, *, q: str | None = None, category_id: UUID | None = None
    ) -> tuple[list[schemas.Contact], int]:
        """:meth:`search` as the API answers it, in one statement without loading models
        (:mod:`app.contacts.listing`)."""
        return await contact_page(self.repository, page, self.search_filters(q), category_id)

    async def find_by_address(self, field: AddressField, value: str) -> Contact | None:
        """The oldest contact with this address (normalised as on input), or None."""
        try:
            normalised = self.normalise_address(field, value)
        except FieldError:
            return None
        column = getattr(Contact, field)
        rows = await self.list(column == normalised, OrderBy(field_name="created_at", sort_order="asc"))
        return rows[0] if rows else None

    def normalise_address(self, field: AddressField, value: str) -> str:
        if field == "phone":
            return normalise_phone(value, self.default_region)
        if field == "email":
            return normalise_email(value)
        return normalise_telegram_chat_id(value)

    async def create_unknown(self, field: AddressField, value: str) -> Contact:
        """A contact for a sender we did not know, flagged ``is_unknown`` (inbound messages)."""
        return await self.create({field: value, "is_unknown": True})

    async def add_to_categories(self, pairs: Iterable[tuple[UUID, UUID]]) -> None:
        """Put contacts into categories in one multi-row INSERT: (contact id, category id) pairs that are
        not memberships yet (the CSV import). Every id must be one of this organization's, or nothing is
        written (404)."""
        rows = [{"contact_id": c, "category_id": k} for c, k in dict.fromkeys(pairs)]
        if not rows:
            return
        session = self.repository.session
        for repository, column, ids in (
            (self.repository, Contact.id, {r["contact_id"] for r in rows}),
            (self.categories.repository, Category.id, {r["category_id"] for r in rows}),
        ):
            count = repository.statement.with_only_columns(func.count(), maintain_column_froms=True)
            if await session.scalar(count.where(column.in_(ids))) != len(ids):
                raise NotFoundError("Not found")
        await session.execute(insert(contact_category), rows)

    async def list_by_ids(self, ids: Iterable[UUID]) -> list[Contact]:
        """The contacts of these ids that belong to the organization (others are silently absent)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        return list(await self.list(Contact.id.in_(wanted)))
