"""The audit log, read-only: org admins read their organization's, sysadmins everyone's (decision 0027)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from advanced_alchemy.filters import LimitOffset
from advanced_alchemy.service import OffsetPagination
from litestar import Controller, Request, get
from litestar.params import Parameter
from litestar.response import Stream

from app.audit import schemas
from app.audit.export import export_rows
from app.audit.services import AuditQuery, AuditReader
from app.providers import AUDIT_DEPENDENCIES
from app.tenants.auth import session_maker
from app.tenants.guards import requires_org_admin

Actor = Annotated[UUID | None, Parameter(query="actor", description="Only entries by this user or client id.")]
Action = Annotated[
    str | None, Parameter(query="action", max_length=64, description="Only this action, e.g. user.created.")
]
TargetType = Annotated[
    str | None, Parameter(query="target_type", max_length=32, description="Only this kind of target, e.g. user.")
]
Since = Annotated[datetime | None, Parameter(query="since", description="Only entries at or after this time.")]
OrgFilter = Annotated[
    UUID | None, Parameter(query="organization_id", description="Sysadmins: only this organization's entries.")
]


def audit_query(
    actor: Actor = None,
    action: Action = None,
    target_type: TargetType = None,
    since: Since = None,
    organization_id: OrgFilter = None,
) -> AuditQuery:
    return AuditQuery(actor, action, target_type, since, organization_id)


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]
    guards = [requires_org_admin]
    dependencies = AUDIT_DEPENDENCIES

    @get("", summary="List audit entries, newest first (filters actor, action, target_type, since)")
    async def list_entries(
        self,
        audit: AuditReader,
        limit_offset: LimitOffset,
        actor: Actor = None,
        action: Action = None,
        target_type: TargetType = None,
        since: Since = None,
        organization_id: OrgFilter = None,
    ) -> OffsetPagination[schemas.AuditEntry]:
        query = audit_query(actor, action, target_type, since, organization_id)
        return await audit.page(query, limit_offset)

    @get("/export", summary="Export audit entries as CSV (the same filters)", media_type="text/csv")
    async def export_entries(
        self,
        request: Request[Any, Any, Any],
        audit: AuditReader,
        actor: Actor = None,
        action: Action = None,
        target_type: TargetType = None,
        since: Since = None,
        organization_id: OrgFilter = None,
    ) -> Stream:
        query = audit_query(actor, action, target_type, since, organization_id)
        return Stream(
            export_rows(session_maker(request), audit.reads_organization, query),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
        )
