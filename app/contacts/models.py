"""Contacts and the categories that group them (many-to-many through ``contact_category``)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy import Boolean, Column, ForeignKey, Index, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base, metadata

contact_category = Table(
    "contact_category",
    metadata,
    Column("contact_id", GUID, ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True),
    Column("category_id", GUID, ForeignKey("category.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Category(Base):
    __tablename__ = "category"
    __table_args__ = (UniqueConstraint("organization_id", "name", name="uq_category_organization_name"),)

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(500), default=None)


class Contact(Base):
    __tablename__ = "contact"
    __table_args__ = (
        Index("ix_contact_organization_phone", "organization_id", "phone"),
        Index("ix_contact_organization_email", "organization_id", "email"),
        Index("ix_contact_organization_telegram", "organization_id", "telegram_chat_id"),
    )

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    title: Mapped[str | None] = mapped_column(String(50), default=None)
    first_name: Mapped[str | None] = mapped_column(String(100), default=None)
    surname: Mapped[str | None] = mapped_column(String(100), default=None)
    phone: Mapped[str | None] = mapped_column(String(20), default=None)  # E.164: "+" and at most 15 digits
    email: Mapped[str | None] = mapped_column(String(320), default=None)  # lowercased
    telegram_chat_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # The contact's default servicechain (deleting a chain in use is refused; SET NULL is the backstop).
    servicechain_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("servicechain.id", ondelete="SET NULL"), default=None
    )
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    opted_out_via: Mapped[str | None] = mapped_column(String(64), default=None)  # the service's name
    is_unknown: Mapped[bool] = mapped_column(Boolean, default=False)  # created from an unknown sender
    notes: Mapped[str | None] = mapped_column(Text, default=None)

    categories: Mapped[list[Category]] = relationship(secondary=contact_category, lazy="selectin")

    @property
    def category_ids(self) -> list[UUID]:
        return sorted((c.id for c in self.categories), key=str)

    @property
    def display_name(self) -> str:
        """A human label: the name, else the first address, else "Unknown contact"."""
        name = " ".join(p for p in (self.title, self.first_name, self.surname) if p)
        return name or self.phone or self.email or self.telegram_chat_id or "Unknown contact"
