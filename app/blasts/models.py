"""Blasts: one content sent to an audience, and the audience itself (snapshotted when it is accepted)."""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import UUID

from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import Column, Enum, ForeignKey, Integer, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, metadata


class BlastState(enum.StrEnum):
    SCHEDULED = "scheduled"
    FANNING_OUT = "fanning_out"
    SENDING = "sending"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


#: the states in which a blast may still send (and may be cancelled)
ACTIVE = (BlastState.SCHEDULED, BlastState.FANNING_OUT, BlastState.SENDING)


class Blast(Base):
    __tablename__ = "blast"
    __table_args__ = (UniqueConstraint("organization_id", "idempotency_key", name="uq_blast_idempotency_key"),)

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    servicechain_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("servicechain.id", ondelete="SET NULL"), default=None
    )
    #: the chain's services, copied when the blast is accepted (as for a message)
    route: Mapped[list[str]] = mapped_column(JsonB, default=list)
    state: Mapped[BlastState] = mapped_column(
        Enum(
            BlastState,
            native_enum=False,
            length=16,
            validate_strings=True,
            values_callable=lambda e: [m.value for m in e],
        ),
        default=BlastState.FANNING_OUT,
        index=True,
    )
    send_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    #: contacts that get a message (opted-out ones excluded)
    audience: Mapped[int] = mapped_column(Integer, default=0)
    skipped_opted_out: Mapped[int] = mapped_column(Integer, default=0)
    #: the audience as the request named it (``contact_ids``, ``category_ids``) until the first fan-out step
    #: snapshots it into ``blast_recipient`` (then None): the POST only counts it
    selection: Mapped[dict[str, list[str]] | None] = mapped_column(JsonB, default=None)
    #: messages created so far, and the last recipient (contact id, in key order) they reached
    fanned_out: Mapped[int] = mapped_column(Integer, default=0)
    cursor: Mapped[UUID | None] = mapped_column(GUID, default=None)
    #: credits still held by the blast itself (reserved at POST, passed to each message when it is created)
    credits_held: Mapped[int] = mapped_column(Integer, default=0)
    #: the fan-out step that may run next: a step claims it by incrementing it (one chain of steps at a time)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    completed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    #: the user or API client that created it
    created_by: Mapped[UUID | None] = mapped_column(GUID, default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), default=None)
    request_hash: Mapped[str | None] = mapped_column(String(64), default=None)


#: the audience of a blast, resolved in SQL when it is accepted: each contact once (primary key)
blast_recipient = Table(
    "blast_recipient",
    metadata,
    Column("blast_id", GUID, ForeignKey("blast.id", ondelete="CASCADE"), primary_key=True),
    Column("contact_id", GUID, ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True),
)
