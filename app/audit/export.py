"""The audit log as CSV, streamed a batch at a time from a session of its own (the request's is gone
by the time the body streams)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.models import AuditEntry
from app.audit.services import AuditQuery, AuditService, InstanceAuditService

COLUMNS = (
    "at",
    "organization_id",
    "actor_kind",
    "actor_id",
    "actor_name",
    "action",
    "target_type",
    "target_id",
    "summary",
    "ip",
)
# the same rule as the contacts' export: a cell a spreadsheet would run as a formula gets a leading '
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    text = "" if value is None else value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(cells)
    return buffer.getvalue()


def row_cells(row: AuditEntry) -> list[str]:
    return [_cell(getattr(row, c)) for c in COLUMNS]


async def export_rows(
    sessions: Callable[[], AbstractAsyncContextManager[AsyncSession]], organization_id: UUID | None, query: AuditQuery
) -> AsyncIterator[str]:
    """The entries matching ``query``, newest first: ``organization_id`` None is the whole instance
    (sysadmins), else that organization's only."""
    yield _line(list(COLUMNS))
    async with sessions() as session:
        reader: AuditService | InstanceAuditService
        if organization_id is None:
            reader = InstanceAuditService(session=session)
        else:
            reader = AuditService(session=session, organization_id=organization_id)
        async for batch in reader.stream(query):
            yield "".join(_line(row_cells(r)) for r in batch)
