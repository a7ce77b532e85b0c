"""What the API answers for an audit entry (msgspec)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec


class AuditEntry(msgspec.Struct):
    id: UUID
    at: datetime
    organization_id: UUID | None
    actor_kind: str
    actor_id: UUID | None
    actor_name: str
    action: str
    target_type: str
    target_id: str | None
    summary: str
    ip: str | None
