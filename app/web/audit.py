"""The audit log page (org admins: their organization's; sysadmins: everyone's), with the API's filters
and a CSV export of what is shown (decision 0027). Read-only."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get
from litestar.plugins.htmx import HTMXRequest
from litestar.response import Stream

from app.audit.export import export_rows
from app.audit.services import AuditQuery, AuditReader
from app.providers import AUDIT_DEPENDENCIES
from app.tenants.auth import session_maker
from app.tenants.guards import requires_org_admin
from app.web.common import FormErrors, ListView, parse_uuid

LIST_URL = "/audit"
LIST = ListView(
    url=LIST_URL, target="audit-list", name="entries", template="audit/list.html", fragment="partials/_audit_table.html"
)
FILTERS = ("actor", "action", "target_type", "since", "organization_id")


def _text(value: str | None, size: int) -> str:
    return (value or "").strip()[:size]


def read_filters(params: dict[str, str], errors: FormErrors) -> AuditQuery:
    """The filters typed on the page; one that cannot be read is named in ``errors`` and left out."""
    actor = parse_uuid(params["actor"])
    if params["actor"] and actor is None:
        errors.add("actor", "An actor is the id of a user or client, like 3f2b…-….")
    org = parse_uuid(params["organization_id"])
    if params["organization_id"] and org is None:
        errors.add("organization_id", "An organization is named by its id.")
    since: datetime | None = None
    if params["since"]:
        try:
            since = datetime.combine(date.fromisoformat(params["since"]), datetime.min.time(), tzinfo=UTC)
        except ValueError:
            errors.add("since", "Give a date like 2026-12-01.")
    return AuditQuery(actor, params["action"] or None, params["target_type"] or None, since, org)


def _params(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {name: _text(request.query_params.get(name), 64) for name in FILTERS}


class AuditPages(Controller):
    path = LIST_URL
    guards = [requires_org_admin]
    dependencies = AUDIT_DEPENDENCIES

    @get("/", name="audit")
    async def list_entries(self, request: HTMXRequest, audit: AuditReader, page_number: int) -> Response[Any]:
        params = _params(request)
        errors = FormErrors()
        query = read_filters(params, errors)
        return await LIST.render(
            request,
            audit,
            page_number,
            params=params,
            rows=lambda window: audit.search(query, window),
            errors=errors,
            filters=params,
            instance=audit.reads_organization is None,
            export_url=f"{LIST_URL}/export?{urlencode({k: v for k, v in params.items() if v})}",
        )

    @get("/export", name="audit_export")
    async def export_entries(self, request: Request[Any, Any, Any], audit: AuditReader) -> Stream:
        query = read_filters(_params(request), FormErrors())
        return Stream(
            export_rows(session_maker(request), audit.reads_organization, query),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
        )
