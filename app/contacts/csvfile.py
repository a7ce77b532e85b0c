"""The contacts CSV file: reading an upload and writing an export. No database here, only CPU work
(:mod:`app.contacts.csvio` runs the reading in a worker thread, then saves the rows).

- :func:`parse_csv`: the file is UTF-8 (a byte-order mark is fine), at most 5 MiB and 10 000 data rows;
  its first line names the columns (at most 50; trailing empty ones are ignored). Commas separate fields;
  a header without commas but with semicolons or tabs switches to that separator (spreadsheets of some
  locales save so). Column names ignore case, spaces and hyphens, and a few common aliases are understood
  (``last_name`` → ``surname``, ``mobile`` → ``phone``…). Anything else about the file that is wrong
  (binary data, not UTF-8, no header, unknown or repeated columns, broken quoting, too big) rejects the
  whole file with a :class:`CSVFormatError` naming it. Time is linear in the size of the file.
- :func:`prepare_rows`: each row's fields normalised as the API would, or its errors; all the rows name
  at most 10 000 different categories (else the whole file is refused), 50 per row.
- :func:`export_csv`: cells that a spreadsheet would run as a formula are exported with a leading ``'``;
  the import removes it again, so an export imports back unchanged.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from advanced_alchemy.filters import LimitOffset, OrderBy

from app.contacts.fields import FieldError, clean_text
from app.contacts.models import Contact
from app.contacts.schemas import ContactCreate, ImportReport, ImportRowError
from app.contacts.services import ContactService
from app.errors import ValidationProblem
from app.textfields import max_lengths

MAX_BYTES = 5 * 1024 * 1024
MAX_ROWS = 10_000
MAX_COLUMNS = 50
MAX_CATEGORIES_PER_ROW = 50
MAX_CATEGORIES_PER_FILE = 10_000


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
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
VERBATIM = frozenset({"id", "phone", "telegram_chat_id", "opted_out"})
TRUE = frozenset({"true", "yes", "y", "1", "t"})
FALSE = frozenset({"false", "no", "n", "0", "f"})
ROW = "_row"  # error key for a problem of the whole row


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


# ---------------------------------------------------------------- rows


@dataclass
class PreparedRow:
    line: int
    data: dict[str, Any]  # normalised contact fields present (and non-blank) in the row
    category_names: list[str] = field(default_factory=list)
    contact_id: UUID | None = None


#: the request schema's length limits, so the import refuses exactly what the API refuses
MAX_LENGTHS = max_lengths(ContactCreate)


def _split_categories(cell: str) -> list[str]:
    return [part.strip() for part in cell.replace("|", ";").split(";") if part.strip()]


def _prepare_row(service: ContactService, row: CSVRow) -> PreparedRow | dict[str, str]:
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
    prepared = PreparedRow(line=row.line, data=data)
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


def read_upload(service: ContactService, raw: bytes) -> tuple[list[PreparedRow], ImportReport]:
    return prepare_rows(service, parse_csv(raw))


def prepare_rows(service: ContactService, parsed: ParsedCSV) -> tuple[list[PreparedRow], ImportReport]:
    """The rows ready to save and a report holding the rejected ones (CPU only: run in a thread)."""
    report = ImportReport(created=0, updated=0, rejected=0, errors=[])
    prepared: list[PreparedRow] = []
    for row in parsed.rows:
        outcome = _prepare_row(service, row)
        if isinstance(outcome, dict):
            reject(report, row.line, outcome)
        else:
            prepared.append(outcome)
    distinct = len({name.lower() for row in prepared for name in row.category_names})
    if distinct > MAX_CATEGORIES_PER_FILE:
        raise CSVFormatError(
            f"The file names {distinct} different categories; an import may name at most "
            f"{MAX_CATEGORIES_PER_FILE}. Split it into smaller files."
        )
    return prepared, report


def reject(report: ImportReport, line: int, errors: dict[str, str]) -> None:
    report.rejected += 1
    report.errors.append(ImportRowError(row=line, errors=errors))


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
