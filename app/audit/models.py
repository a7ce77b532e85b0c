"""One audit entry: who (user, API client, the system or an unknown caller), organization, action,
target, the names of the fields changed (never their values), IP and time. Entries are only added."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.clock import utcnow
from app.db.base import Base


class AuditEntry(Base):
    __tablename__ = "audit_entry"
    # no foreign keys: the log outlives the organization, user or client it names
    __table_args__ = (
        Index("ix_audit_entry_org_at", "organization_id", "at"),
        Index("ix_audit_entry_at", "at"),
    )

    at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    organization_id: Mapped[UUID | None] = mapped_column(default=None)
    #: ``user``, ``client``, ``system`` (a job, the CLI, a keyword) or ``anonymous`` (a failed login)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[UUID | None] = mapped_column(default=None, index=True)
    actor_name: Mapped[str] = mapped_column(String(320), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32), index=True)
    target_id: Mapped[str | None] = mapped_column(String(64), default=None)
    summary: Mapped[str] = mapped_column(String(500), default="")
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
