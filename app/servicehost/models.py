"""Service health (instance-wide) and per-organization service credentials (encrypted)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Boolean, Float, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class ServiceStatus(Base):
    """The last health check of one installed plugin, shared by every process of the instance."""

    __tablename__ = "service_status"

    name: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    address_field: Mapped[str | None] = mapped_column(String(32), default=None)
    needs_credentials: Mapped[bool] = mapped_column(Boolean, default=False)
    #: ``available`` or ``blacklisted``
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    checked_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))

    @property
    def available(self) -> bool:
        return self.status == "available"


class ServiceCredential(Base):
    """One organization's credentials for one service: a Fernet token, never the plain values."""

    __tablename__ = "service_credential"
    __table_args__ = (UniqueConstraint("organization_id", "service", name="uq_service_credential_org_service"),)

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    service: Mapped[str] = mapped_column(String(64))
    ciphertext: Mapped[str] = mapped_column(Text)
    #: the sends per second this organization allows itself on the service (None: the plugin's own
    #: ``rate_per_second``); not a secret, so the send rate limiter reads it without decrypting
    rate_per_second: Mapped[float | None] = mapped_column(Float, default=None)
