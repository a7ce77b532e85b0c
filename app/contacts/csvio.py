"""CSV import and export of contacts, shared by the API and the pages.

Import (:func:`parse_csv` then :func:`import_contacts`):

- The file is UTF-8 (a byte-order mark is fine), at most 5 MiB and 10 000 data rows; its first line names
  the columns (at most 50; trailing empty ones are ignored), and all its rows name at most 10 000 different
  categories. Commas separate fields; a header without commas but with semicolons or tabs switches to
  that separator (spreadsheets of some locales save so). Column names ignore case, spaces and hyphens,
  and a few common aliases are understood (``last_name`` → ``surname``, ``mobile`` → ``phone``…).
  Anything else about the file that is wrong (binary data, not UTF-8, no header, unknown or repeated
  columns, broken quoting, too big) rejects the whole file with a :class:`CSVFormatError` naming it.
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
- Cells that a spreadsheet would run as a formula are exported with a leading ``'``; the import removes
  it again, so an export imports back unchanged.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from uuid import UUID, uuid4

import anyio.to_thread
import msgspec
from advanced_alchemy.exceptions import IntegrityError as RepositoryIntegrityError
from advanced_alchemy.filters import LimitOffset, OrderBy
from sqlalchemy import exc as sa_exc
from sqlalchemy import or_

from app.contacts.fields import FieldError, clean_text
from app.contacts.models import Contact
from app.contacts.schemas import ContactCreate, ImportReport, ImportRowError
from app.contacts.services import IDENTIFYING_FIELDS, NEEDS_IDENTITY, ContactService, utcnow
from app.db.config import is_busy_error, write_transaction
from app.logging import get_logger
from app.tenants.services import ValidationProblem

log = get_logger(__name__)
T = TypeVar("T")

MAX_BYTES = 5 * 1024 * 1024
MAX_ROWS = 10_000
MAX_COLUMNS = 50
MAX_CATEGORIES_PER_ROW = 50
MAX_CATEGORIES_PER_FILE = 10_000
CHUNK = 500  # rows per transaction
CATEGORY_CHUNK = 2_000  # new categories per transaction
BUSY_ATTEMPTS = 3  # a batch the database is too busy for is tried this often (SQLite waits busy_timeout each time)

FIELDS = ("title", "first_name", "surname", "phone", "email", "telegram_chat_id", "categories", "opted_out", "notes")
EXPORT_COLUMNS = ("id", *FIELDS)
IMPORT_COLUMNS = frozenset(EXPORT_COLUMNS)
TEXT_COLUMNS = ("title", "first_name", "surname", "phone", "email", "telegram_chat_id", "notes")
ALIASES = {
    "firstname": "first_name",
    "given_name": "first_name",
    "forename": "first_name",
    "lastname": "surname",
    "last_name": "surname",
    "family_name": "surname",
    "mobile": "phone",
    "phone_number": "phone",
    "telephone": "phone",
    "tel": "phone",
    "e_mail": "email",
    "email_address": "email",
    "telegram": "telegram_chat_id",
    "category": "categories",
    "opt_out": "opted_out",
    "note": "notes",
}
TRUE = frozenset({"true", "yes", "y", "1", "t"})
FALSE = frozenset({"false", "no", "n", "0", "f"})
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
VERBATIM = frozenset({"id", "phone", "telegram_chat_id", "opted_out"})
ROW = "_row"  # error key for a problem of the whole row
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


class CSVFormatError(ValidationProblem):
    """The file as a whole cannot be read as a contacts CSV (422, field ``file``)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, "file")


@dataclass
class CSVRow:
    line: int
    values: dict[str, str]
    extra_cells: int = 0


@dataclass
class ParsedCSV:
    columns: list[str]
    rows: list[CSVRow]


@dataclass
class _Prepared:
    line: int
    data: dict[str, Any]  # normalised contact fields present (and non-blank) in the row
    category_names: list[str] = field(default_factory=list)
    contact_id: UUID | None = None


def _max_lengths() -> dict[str, int]:
    """The request schema's length limits, so the import refuses exactly what the API refuses."""
    limits: dict[str, int] = {}
    info = msgspec.inspect.type_info(ContactCreate)
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        types = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
        for t in types:
            if isinstance(t, msgspec.inspect.StrType) and t.max_length is not None:
                limits[f.name] = t.max_length
    return limits


MAX_LENGTHS = _max_lengths()


def canonical_column(name: str) -> str:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return ALIASES.get(key, key)


def _unescape(cell: str) -> str:
    if len(cell) > 1 and cell[0] == "'" and cell[1] in FORMULA_START:
        return cell[1:]
    return cell


def _escape(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_START) else cell


def parse_csv(raw: bytes) -> ParsedCSV:
    """The header and the non-blank rows of an uploaded file, or :class:`CSVFormatError`."""
    if len(raw) > MAX_BYTES:
        raise CSVFormatError(f"The file is larger than {MAX_BYTES // (1024 * 1024)} MiB; split it into smaller files.")
    if not raw.strip():
        raise CSVFormatError("The file is empty: its first line must name the columns.")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CSVFormatError("The file is UTF-16 text; save it as “CSV UTF-8”.")
    if b"\x00" in raw:
        raise CSVFormatError("This is not a CSV text file (it contains binary data).")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CSVFormatError(
            f"The file is not UTF-8 text (invalid byte at position {exc.start}); save it as “CSV UTF-8”."
        ) from None
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    delimiter = ","
    if "," not in first_line:
        delimiter = ";" if ";" in first_line else "\t" if "\t" in first_line else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header: list[str] | None = None
        rows: list[CSVRow] = []
        line = 1
        for record in reader:
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = _check_header(record)
                continue
            if len(rows) >= MAX_ROWS:
                raise CSVFormatError(f"The file has more than {MAX_ROWS} rows; split it into smaller files.")
            values = {name: _unescape(cell) for name, cell in zip(header, record, strict=False) if name}
            extra = sum(1 for cell in record[len(header) :] if cell.strip())  # trailing empty cells are fine
            rows.append(CSVRow(line=start, values=values, extra_cells=extra))
    except csv.Error as exc:
        raise CSVFormatError(f"The file is not valid CSV at line {reader.line_num}: {exc}.") from None
    if header is None:  # pragma: no cover - a non-blank file always has a first record
        raise CSVFormatError("The file has no header line naming the columns.")
    return ParsedCSV(columns=header, rows=rows)


def _check_header(record: list[str]) -> list[str]:
    named = len(record)
    while named and not record[named - 1].strip():  # trailing separators
        named -= 1
    if named > MAX_COLUMNS:
        raise CSVFormatError(
            f"The header line names {named} columns; a contacts file has at most {MAX_COLUMNS}, "
            f"among: {', '.join(EXPORT_COLUMNS)}."
        )
    record = record[:named]
    columns = [canonical_column(c) for c in record]
    if any(not c for c in columns):
        raise CSVFormatError("Every column of the header line needs a name.")
    unknown = [name for name, c in zip(record, columns, strict=False) if c not in IMPORT_COLUMNS]
    if unknown:
        shown = ", ".join(repr(u[:40]) for u in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise CSVFormatError(
            f"Unknown columns: {shown}. The first line must name the columns, among: {', '.join(EXPORT_COLUMNS)}."
        )
    repeated = sorted(c for c, n in Counter(columns).items() if n > 1)
    if repeated:
        raise CSVFormatError(f"Columns named more than once: {', '.join(repeated)}.")
    return columns


def _split_categories(cell: str) -> list[str]:
    return [part.strip() for part in cell.replace("|", ";").split(";") if part.strip()]


def _prepare_row(service: ContactService, row: CSVRow) -> _Prepared | dict[str, str]:
    """The row's normalised fields, or its errors (column → message)."""
    errors: dict[str, str] = {}
    if row.extra_cells:
        errors[ROW] = f"This row has {row.extra_cells} more field(s) than the header names."
    data: dict[str, Any] = {}
    for column in TEXT_COLUMNS:
        cell = row.values.get(column, "")
        if not cell.strip():
            continue
        limit = MAX_LENGTHS.get(column)
        if limit is not None and len(cell.strip()) > limit:
            errors[column] = f"At most {limit} characters."
            continue
        data[column] = cell
    data, field_errors = service.normalise_fields(data)
    errors.update(field_errors)
    prepared = _Prepared(line=row.line, data=data)
    opted = row.values.get("opted_out", "").strip().lower()
    if opted:
        if opted in TRUE:
            data["opted_out"] = True
        elif opted in FALSE:
            data["opted_out"] = False
        else:
            errors["opted_out"] = "Use true or false (yes/no, 1/0)."
    raw_id = row.values.get("id", "").strip()
    if raw_id:
        try:
            prepared.contact_id = UUID(raw_id)
        except ValueError:
            errors["id"] = "This is not a contact id (a UUID)."
    names = _split_categories(row.values.get("categories", ""))
    if len(names) > MAX_CATEGORIES_PER_ROW:
        errors["categories"] = f"At most {MAX_CATEGORIES_PER_ROW} categories per contact."
    else:
        for name in names:
            try:
                clean_text(name)
            except FieldError as exc:
                errors["categories"] = str(exc)
                break
            if len(name) > 100:
                errors["categories"] = "A category name has at most 100 characters."
                break
        prepared.category_names = names
    if errors:
        return errors
    return prepared


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

    async def load(self, service: ContactService, rows: Iterable[_Prepared]) -> None:
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

    def match(self, row: _Prepared) -> Contact | dict[str, str] | None:
        if row.contact_id is not None and row.contact_id in self.by_id:
            return self.by_id[row.contact_id]
        by_phone = self.by_phone.get(row.data["phone"]) if row.data.get("phone") else None
        by_email = self.by_email.get(row.data["email"]) if row.data.get("email") else None
        if by_phone is not None and by_email is not None and by_phone is not by_email:
            return {ROW: "The phone matches one contact and the e-mail another; fix the row or the contacts."}
        return by_phone or by_email


async def import_file(service: ContactService, raw: bytes) -> ImportReport:
    """Import an uploaded file (what the API and the page run); :class:`CSVFormatError` for a file that
    cannot be read as a whole. Commits as it goes (see the module's docstring)."""
    prepared, report = await anyio.to_thread.run_sync(_read, service, raw)
    await _save_all(service, prepared, report)
    return report


async def import_contacts(service: ContactService, parsed: ParsedCSV) -> ImportReport:
    """Create or update a contact per row of ``parsed``; bad rows are reported, good rows are kept."""
    prepared, report = await anyio.to_thread.run_sync(_prepare_all, service, parsed)
    await _save_all(service, prepared, report)
    return report


def _read(service: ContactService, raw: bytes) -> tuple[list[_Prepared], ImportReport]:
    return _prepare_all(service, parse_csv(raw))


def _prepare_all(service: ContactService, parsed: ParsedCSV) -> tuple[list[_Prepared], ImportReport]:
    """The rows ready to save and a report holding the rejected ones (CPU only: run in a thread)."""
    report = ImportReport(created=0, updated=0, rejected=0, errors=[])
    prepared: list[_Prepared] = []
    for row in parsed.rows:
        outcome = _prepare_row(service, row)
        if isinstance(outcome, dict):
            _reject(report, row.line, outcome)
        else:
            prepared.append(outcome)
    distinct = len({name.lower() for row in prepared for name in row.category_names})
    if distinct > MAX_CATEGORIES_PER_FILE:
        raise CSVFormatError(
            f"The file names {distinct} different categories; an import may name at most "
            f"{MAX_CATEGORIES_PER_FILE}. Split it into smaller files."
        )
    return prepared, report


def _reject(report: ImportReport, line: int, errors: dict[str, str]) -> None:
    report.rejected += 1
    report.errors.append(ImportRowError(row=line, errors=errors))


async def _save_all(service: ContactService, prepared: list[_Prepared], report: ImportReport) -> None:
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
                log.info("csv import: a batch was refused, saving its rows one by one", error=_driver_error(exc))
                outcomes = await _write(service, partial(_save_apart, service, chunk, category_ids))
        except Exception as exc:  # busy beyond the retries, or a fault of ours: the rest is not saved
            message = _refusal(service, exc, chunk[0].line, rows=len(prepared) - start)
            for item in prepared[start:]:
                _reject(report, item.line, {ROW: message})
            break
        for line, result in outcomes:
            if result == "created":
                report.created += 1
            elif result == "updated":
                report.updated += 1
            else:
                _reject(report, line, result)  # type: ignore[arg-type]
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
            log.info("csv import: the database is busy, trying again", attempt=attempt, error=_driver_error(exc))
            await asyncio.sleep(0.2 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def _create_categories(service: ContactService, prepared: list[_Prepared]) -> dict[str, UUID]:
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
    service: ContactService, rows: list[_Prepared], category_ids: dict[str, UUID]
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
    service: ContactService, rows: list[_Prepared], category_ids: dict[str, UUID]
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
        log.warning("csv import: not saved, the database is busy", **fields, error=_driver_error(exc))
        return BUSY
    if _caused_by(exc, sa_exc.DataError):
        log.warning("csv import: row refused by the database", **fields, error=_driver_error(exc))
        return BAD_VALUE
    if _caused_by(exc, sa_exc.IntegrityError) or isinstance(exc, RepositoryIntegrityError):
        log.warning("csv import: row refused by the database", **fields, error=_driver_error(exc))
        return CONFLICT
    ref = uuid.uuid4().hex[:12]
    log.error("csv import: row not saved", **fields, ref=ref, error=_driver_error(exc), exc_info=exc)
    return UNEXPECTED.format(ref=ref)


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(e, kind) for e in _chain(exc))


def _driver_error(exc: BaseException) -> str:
    """The database's own message (first line: no SQL, no parameter values), else the exception's type."""
    for e in _chain(exc):
        if isinstance(e, sa_exc.DBAPIError) and e.orig is not None:
            text = str(e.orig).strip().splitlines()
            return f"{type(e.orig).__name__}: {text[0] if text else ''}"[:300]
    return type(exc).__name__


def _new_contact(row: _Prepared, category_ids: list[UUID]) -> Contact:
    """A contact for ``row``, not yet added to the session (:func:`_save` inserts them in bulk)."""
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


def _apply_update(contact: Contact, row: _Prepared) -> None:
    data = dict(row.data)
    opted_out = data.pop("opted_out", None)
    for key, value in data.items():
        setattr(contact, key, value)
    if opted_out and not contact.opted_out:
        contact.opted_out = True
        contact.opted_out_at = utcnow()
        contact.opted_out_via = None
    contact.is_unknown = False


# ---------------------------------------------------------------- export


def contact_cells(contact: Contact) -> list[str]:
    """One export row, in :data:`EXPORT_COLUMNS` order."""
    values: dict[str, str] = {
        "id": str(contact.id),
        "categories": ";".join(sorted((c.name for c in contact.categories), key=str.lower)),
        "opted_out": "true" if contact.opted_out else "false",
    }
    for column in TEXT_COLUMNS:
        value = getattr(contact, column)
        values[column] = "" if value is None else str(value)
    # Phones and Telegram ids are validated numbers: left as they are. Free text could start a formula.
    return [values[c] if c in VERBATIM else _escape(values[c]) for c in EXPORT_COLUMNS]


def _line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue()


async def export_csv(
    service: ContactService, *, q: str | None = None, category_id: UUID | None = None, batch_size: int = 500
) -> AsyncIterator[str]:
    """The organization's contacts (optionally searched) as CSV text, a batch at a time."""
    clauses = service.search_filters(q, category_id)
    yield _line(list(EXPORT_COLUMNS))
    last: UUID | None = None
    while True:
        after = [Contact.id > last] if last is not None else []
        batch = await service.list(
            *clauses, *after, OrderBy(field_name="id", sort_order="asc"), LimitOffset(limit=batch_size, offset=0)
        )
        if not batch:
            return
        yield "".join(_line(contact_cells(c)) for c in batch)
        last = batch[-1].id
        if len(batch) < batch_size:
            return
