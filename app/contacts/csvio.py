"""CSV import and export of contacts, shared by the API and the pages.

The file itself (limits, encoding, columns, formula escaping, the export) is :mod:`app.contacts.csvfile`;
its names are re-exported here. Export: :func:`export_download`, what both the API and the page stream.
Import (:func:`import_file`, what both the API and the page run):

- The file is read and checked as a whole first (:class:`CSVFormatError`, 422).
- Each row is then handled on its own: a bad row is reported (``row`` is its line number in the file, the
  header being line 1) and never stops the others. A row updates an existing contact when its ``id`` is
  one of the organization's contacts, or else when its phone or e-mail matches one (the oldest, if
  several); otherwise it creates a contact. A row whose phone and e-mail match two different contacts is
  rejected rather than guessed.
- On update, blank cells leave the field as it is, ``categories`` adds the named categories (created
  when missing; names are separated by ``;`` or ``|``), and ``opted_out`` can opt a contact out but never
  back in: someone who sent STOP is not re-subscribed by a spreadsheet (use the contact's page or API).
- Reading and checking the file is CPU work: it runs in a worker thread, never on the event loop. Saving
  creates the new categories in bulk, then saves the rows 500 at a time, each batch in its own short
  transaction (committed: a large import never holds the database for long, and what is committed stays).
  A batch the database refuses is redone row by row and only the refused rows are reported, each with a
  reason; if the database stays busy, the rows not yet saved are reported as such (importing the same file
  again is safe: saved rows are matched and updated, not duplicated). The underlying errors are logged.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any, TypeVar
from uuid import UUID, uuid4

import anyio.to_thread
from advanced_alchemy.exceptions import IntegrityError as RepositoryIntegrityError
from advanced_alchemy.filters import OrderBy
from sqlalchemy import exc as sa_exc
from sqlalchemy import or_
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import utcnow
from app.contacts.csvfile import (
    EXPORT_COLUMNS,
    FIELDS,
    IMPORT_COLUMNS,
    MAX_BYTES,
    MAX_CATEGORIES_PER_FILE,
    MAX_CATEGORIES_PER_ROW,
    MAX_COLUMNS,
    MAX_ROWS,
    ROW,
    CSVFormatError,
    CSVRow,
    ParsedCSV,
    PreparedRow,
    canonical_column,
    contact_cells,
    export_csv,
    parse_csv,
    prepare_rows,
    read_upload,
    reject,
)
from app.contacts.models import Contact
from app.contacts.schemas import ImportReport
from app.contacts.services import IDENTIFYING_FIELDS, NEEDS_IDENTITY, ContactService
from app.db.config import database_message, exception_chain, is_busy_error, write_transaction
from app.logging import get_logger

__all__ = [
    "EXPORT_COLUMNS",
    "FIELDS",
    "IMPORT_COLUMNS",
    "MAX_BYTES",
    "MAX_CATEGORIES_PER_FILE",
    "MAX_CATEGORIES_PER_ROW",
    "MAX_COLUMNS",
    "MAX_ROWS",
    "ROW",
    "CSVFormatError",
    "CSVRow",
    "ParsedCSV",
    "canonical_column",
    "contact_cells",
    "export_csv",
    "export_download",
    "import_contacts",
    "import_file",
    "parse_csv",
]

log = get_logger(__name__)
T = TypeVar("T")

CHUNK = 500  # rows per transaction
CATEGORY_CHUNK = 2_000  # new categories per transaction
BUSY_ATTEMPTS = 3  # a batch the database is too busy for is tried this often (SQLite waits busy_timeout each time)

# Why a row was not saved, for the person who will fix the file or try again.
BUSY = (
    "Not saved: the database was busy. Import the file again; rows already imported are matched and "
    "updated, not duplicated."
)
CONFLICT = (
    "The database refused this row: it conflicts with existing data (a value that must be unique, or a "
    "reference to something that does not exist). Check the row against the existing contacts."
)
BAD_VALUE = "The database refused a value of this row (too long, or not in the form it expects). Check the row."
UNEXPECTED = (
    "Not saved because of an error on our side (reference {ref}). Import the file again; if it happens "
    "again, tell support the reference."
)


class _Index:
    """Existing and newly imported contacts by id, phone and e-mail (the oldest wins), and the categories
    of the existing ones."""

    def __init__(self) -> None:
        self.by_id: dict[UUID, Contact] = {}
        self.by_phone: dict[str, Contact] = {}
        self.by_email: dict[str, Contact] = {}
        self.categories: dict[UUID, list[UUID]] = {}

    def add(self, contact: Contact) -> None:
        self.by_id[contact.id] = contact
        if contact.phone:
            self.by_phone.setdefault(contact.phone, contact)
        if contact.email:
            self.by_email.setdefault(contact.email, contact)

    def forget(self, contact: Contact) -> None:
        if self.by_id.get(contact.id) is contact:
            del self.by_id[contact.id]
        if contact.phone and self.by_phone.get(contact.phone) is contact:
            del self.by_phone[contact.phone]
        if contact.email and self.by_email.get(contact.email) is contact:
            del self.by_email[contact.email]

    async def load(self, service: ContactService, rows: Iterable[PreparedRow]) -> None:
        ids = {r.contact_id for r in rows if r.contact_id} - self.by_id.keys()
        phones = {r.data["phone"] for r in rows if r.data.get("phone")} - self.by_phone.keys()
        emails = {r.data["email"] for r in rows if r.data.get("email")} - self.by_email.keys()
        clauses = []
        if ids:
            clauses.append(Contact.id.in_(ids))
        if phones:
            clauses.append(Contact.phone.in_(phones))
        if emails:
            clauses.append(Contact.email.in_(emails))
        if not clauses:
            return
        oldest_first = (OrderBy(field_name="created_at", sort_order="asc"), OrderBy(field_name="id", sort_order="asc"))
        for contact in await service.list(or_(*clauses), *oldest_first):
            self.categories[contact.id] = [c.id for c in contact.categories]
            self.add(contact)

    def match(self, row: PreparedRow) -> Contact | dict[str, str] | None:
        if row.contact_id is not None and row.contact_id in self.by_id:
            return self.by_id[row.contact_id]
        by_phone = self.by_phone.get(row.data["phone"]) if row.data.get("phone") else None
        by_email = self.by_email.get(row.data["email"]) if row.data.get("email") else None
        if by_phone is not None and by_email is not None and by_phone is not by_email:
            return {ROW: "The phone matches one contact and the e-mail another; fix the row or the contacts."}
        return by_phone or by_email


def export_download(
    contacts: ContactService,
    sessions: Callable[[], AbstractAsyncContextManager[AsyncSession]],
    *,
    q: str | None = None,
    category_id: UUID | None = None,
) -> AsyncIterator[str]:
    """The organization's contacts as CSV for a download (both faces stream this).

    ``q`` and ``category_id`` are checked now, so bad input answers before the download starts (422). The
    rows are read in a session of their own from ``sessions``: the request's session is gone by the time
    the body streams.
    """
    contacts.search_filters(q, category_id)
    return _export_rows(sessions, contacts.organization_id, q, category_id)


async def _export_rows(
    sessions: Callable[[], AbstractAsyncContextManager[AsyncSession]],
    organization_id: UUID,
    q: str | None,
    category_id: UUID | None,
) -> AsyncIterator[str]:
    async with sessions() as session:
        service = ContactService(session=session, organization_id=organization_id)
        async for chunk in export_csv(service, q=q, category_id=category_id):
            yield chunk


async def import_file(service: ContactService, raw: bytes) -> ImportReport:
    """Import an uploaded file (what the API and the page run); :class:`CSVFormatError` for a file that
    cannot be read as a whole. Commits as it goes (see the module's docstring)."""
    prepared, report = await anyio.to_thread.run_sync(read_upload, service, raw)
    await _save_all(service, prepared, report)
    return report


async def import_contacts(service: ContactService, parsed: ParsedCSV) -> ImportReport:
    """Create or update a contact per row of ``parsed``; bad rows are reported, good rows are kept."""
    prepared, report = await anyio.to_thread.run_sync(prepare_rows, service, parsed)
    await _save_all(service, prepared, report)
    return report


async def _save_all(service: ContactService, prepared: list[PreparedRow], report: ImportReport) -> None:
    session = service.repository.session
    if session.in_transaction():
        await session.commit()  # the import commits batch by batch: start outside any transaction
    category_ids = await _create_categories(service, prepared)
    for start in range(0, len(prepared), CHUNK):
        chunk = prepared[start : start + CHUNK]
        try:
            try:
                outcomes = await _write(service, partial(_save, service, chunk, category_ids))
            except Exception as exc:
                if is_busy_error(exc):
                    raise
                log.info("csv import: a batch was refused, saving its rows one by one", error=database_message(exc))
                outcomes = await _write(service, partial(_save_apart, service, chunk, category_ids))
        except Exception as exc:  # busy beyond the retries, or a fault of ours: the rest is not saved
            message = _refusal(service, exc, chunk[0].line, rows=len(prepared) - start)
            for item in prepared[start:]:
                reject(report, item.line, {ROW: message})
            break
        for line, result in outcomes:
            if result == "created":
                report.created += 1
            elif result == "updated":
                report.updated += 1
            else:
                reject(report, line, result)  # type: ignore[arg-type]
    report.errors.sort(key=lambda e: e.row)


async def _write(service: ContactService, work: Callable[[], Awaitable[T]]) -> T:
    """``work`` in its own write transaction, committed; tried again while the database is busy.

    SQLite has one write lock, and the connections waiting for it only poll (every 100 ms at worst): after
    each batch the import pauses about as long as it held the lock, so the others get their turn.
    """
    session = service.repository.session
    for attempt in range(1, BUSY_ATTEMPTS + 1):
        try:
            started = time.monotonic()
            async with write_transaction(session):
                result = await work()
            if session.get_bind().dialect.name == "sqlite":
                await asyncio.sleep(min(max(time.monotonic() - started, 0.02), 0.1))
            return result
        except Exception as exc:
            if attempt == BUSY_ATTEMPTS or not is_busy_error(exc):
                raise
            log.info("csv import: the database is busy, trying again", attempt=attempt, error=database_message(exc))
            await asyncio.sleep(0.2 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def _create_categories(service: ContactService, prepared: list[PreparedRow]) -> dict[str, UUID]:
    """The ids of every category the rows name (by lowercased name), creating the missing ones in bulk,
    :data:`CATEGORY_CHUNK` at a time. Raises when the database stays busy (the API answers 503)."""
    wanted: dict[str, str] = {}
    for row in prepared:
        for name in row.category_names:
            wanted.setdefault(name.lower(), name)
    names = list(wanted.values())
    ids: dict[str, UUID] = {}
    for start in range(0, len(names), CATEGORY_CHUNK):
        create = partial(service.categories.ids_by_name, names[start : start + CATEGORY_CHUNK])
        try:
            ids.update(await _write(service, create))
        except sa_exc.IntegrityError:  # someone created one of them meanwhile: now the lookup finds it
            ids.update(await _write(service, create))
    return ids


async def _save(
    service: ContactService, rows: list[PreparedRow], category_ids: dict[str, UUID]
) -> list[tuple[int, str | dict[str, str]]]:
    """Apply ``rows`` in the current transaction: changed contacts in one flush, new contacts and new
    memberships in one multi-row INSERT each.

    The session is emptied first and the index loaded afresh: objects from an earlier batch, or from
    before a rollback, may be stale.
    """
    service.repository.session.expunge_all()
    index = _Index()
    await index.load(service, rows)
    outcomes: list[tuple[int, str | dict[str, str]]] = []
    new: dict[UUID, Contact] = {}
    members: dict[UUID, dict[UUID, bool]] = {}  # contact id -> its categories, True for memberships to add
    for item in rows:
        target = index.match(item)
        if isinstance(target, dict):
            outcomes.append((item.line, target))
            continue
        wanted = list(dict.fromkeys(category_ids[n.lower()] for n in item.category_names))
        if target is None:
            if not any(item.data.get(f) for f in IDENTIFYING_FIELDS):
                outcomes.append((item.line, {ROW: NEEDS_IDENTITY}))
                continue
            target = _new_contact(item, wanted)
            new[target.id] = target
            outcomes.append((item.line, "created"))
        else:
            index.forget(target)
            _apply_update(target, item)
            outcomes.append((item.line, "updated"))
        index.add(target)
        present = members.setdefault(target.id, {c: False for c in index.categories.get(target.id, ())})
        present.update((c, True) for c in wanted if c not in present)
    await service.repository.session.flush()  # the updates
    if new:
        await service.repository.insert_many([_columns(c) for c in new.values()])
    pairs = [(contact_id, c) for contact_id, cats in members.items() for c, added in cats.items() if added]
    await service.add_to_categories(pairs)
    return outcomes


async def _save_apart(
    service: ContactService, rows: list[PreparedRow], category_ids: dict[str, UUID]
) -> list[tuple[int, str | dict[str, str]]]:
    """Apply ``rows`` one by one, each in a savepoint of the current transaction; a refused row is
    reported with the reason. A busy database fails the whole batch (the caller tries it again)."""
    session = service.repository.session
    outcomes: list[tuple[int, str | dict[str, str]]] = []
    for item in rows:
        try:
            async with session.begin_nested():
                outcomes += await _save(service, [item], category_ids)
        except Exception as exc:
            if is_busy_error(exc):
                raise
            outcomes.append((item.line, {ROW: _refusal(service, exc, item.line)}))
    return outcomes


def _refusal(service: ContactService, exc: Exception, line: int, rows: int = 1) -> str:
    """The message for rows the database did not save, and a log entry with the underlying error."""
    fields = {"row": line, "rows": rows, "organization_id": str(service.organization_id)}
    if is_busy_error(exc):
        log.warning("csv import: not saved, the database is busy", **fields, error=database_message(exc))
        return BUSY
    if _caused_by(exc, sa_exc.DataError):
        log.warning("csv import: row refused by the database", **fields, error=database_message(exc))
        return BAD_VALUE
    if _caused_by(exc, sa_exc.IntegrityError) or isinstance(exc, RepositoryIntegrityError):
        log.warning("csv import: row refused by the database", **fields, error=database_message(exc))
        return CONFLICT
    ref = uuid.uuid4().hex[:12]
    log.error("csv import: row not saved", **fields, ref=ref, error=database_message(exc), exc_info=exc)
    return UNEXPECTED.format(ref=ref)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(e, kind) for e in exception_chain(exc))


def _new_contact(row: PreparedRow, category_ids: list[UUID]) -> Contact:
    """A contact for ``row``, not added to the session: :func:`_save` inserts the new contacts, and their
    memberships (``category_ids``), in bulk."""
    data = dict(row.data)
    opted_out = bool(data.pop("opted_out", False))
    return Contact(
        id=uuid4(),  # known before the insert: later rows of the file may match it
        **data,
        opted_out=opted_out,
        opted_out_at=utcnow() if opted_out else None,
        is_unknown=False,
    )


_CONTACT_COLUMNS = tuple(column.key for column in Contact.__table__.columns)


def _columns(contact: Contact) -> dict[str, Any]:
    """The column values set on a new contact (the others get their defaults)."""
    return {key: contact.__dict__[key] for key in _CONTACT_COLUMNS if key in contact.__dict__}


def _apply_update(contact: Contact, row: PreparedRow) -> None:
    data = dict(row.data)
    opted_out = data.pop("opted_out", None)
    for key, value in data.items():
        setattr(contact, key, value)
    if opted_out and not contact.opted_out:
        contact.opted_out = True
        contact.opted_out_at = utcnow()
        contact.opted_out_via = None
    contact.is_unknown = False
