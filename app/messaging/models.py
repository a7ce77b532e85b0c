"""Servicechains, messages, their attempts, and idempotency keys."""

from __future__ import annotations

import enum
from datetime import date, datetime
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import Date, Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class MessageState(enum.StrEnum):
    PENDING = "MSG_PENDING"
    SENDING = "MSG_SENDING"
    SENT = "MSG_SENT"
    DELIVERED_SERVICE = "MSG_DELIVERED_SERVICE"
    DELIVERED_USER = "MSG_DELIVERED_USER"
    READ = "MSG_READ"
    REPLIED = "MSG_REPLIED"
    FAILED = "MSG_FAILED"
    RECEIVED = "MSG_RECEIVED"


class Direction(enum.StrEnum):
    OUTGOING = "outgoing"
    INCOMING = "incoming"


class CreditState(enum.StrEnum):
    NONE = "none"
    RESERVED = "reserved"
    CHARGED = "charged"
    RELEASED = "released"


class AttemptOutcome(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    #: the service accepted it, then reported it could not deliver it (a late failure)
    UNDELIVERED = "undelivered"


def _enum(cls: type[enum.StrEnum], length: int = 32) -> Enum:
    return Enum(
        cls, native_enum=False, length=length, validate_strings=True, values_callable=lambda e: [m.value for m in e]
    )


class Servicechain(Base):
    __tablename__ = "servicechain"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(1000), default="")
    services: Mapped[list[str]] = mapped_column(JsonB, default=list)


class Message(Base):
    __tablename__ = "message"
    __table_args__ = (
        Index("ix_message_org_state", "organization_id", "state"),
        Index("ix_message_org_contact", "organization_id", "contact_id"),
        Index("ix_message_provider_id", "provider_message_id"),
        # the dashboard and /stats (app/messaging/stats.py): a window of days per organization, counted from
        # the index alone on PostgreSQL (INCLUDE); live pages: the latest change (migration 0008)
        Index(
            "ix_message_org_created",
            "organization_id",
            "created_at",
            postgresql_include=["id", "state", "direction", "service", "servicechain_id"],
        ),
        Index("ix_message_org_updated", "organization_id", "updated_at"),
        Index("ix_message_org_sent", "organization_id", "sent_at", postgresql_include=["credit"]),
        # a blast's progress and completion count its messages per state
        Index("ix_message_blast_state", "blast_id", "state"),
        # a blast gives each of its contacts one message, however often its fan-out is retried
        Index("uq_message_blast_contact", "blast_id", "contact_id", unique=True),
        # a provider's retry of an inbound message is stored once
        Index(
            "uq_message_incoming_provider_id",
            "organization_id",
            "service",
            "provider_message_id",
            unique=True,
            sqlite_where=text("direction = 'incoming'"),
            postgresql_where=text("direction = 'incoming'"),
        ),
    )

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[UUID] = mapped_column(ForeignKey("contact.id", ondelete="CASCADE"))
    servicechain_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("servicechain.id", ondelete="SET NULL"), default=None
    )
    blast_id: Mapped[UUID | None] = mapped_column(default=None)
    direction: Mapped[Direction] = mapped_column(_enum(Direction, 16), default=Direction.OUTGOING)
    state: Mapped[MessageState] = mapped_column(_enum(MessageState), default=MessageState.PENDING)
    #: the service that sent (or is sending) it
    service: Mapped[str | None] = mapped_column(String(64), default=None)
    #: the chain's services, copied when the message is accepted, so editing a chain never reroutes it
    route: Mapped[list[str]] = mapped_column(JsonB, default=list)
    content: Mapped[str] = mapped_column(Text)
    reply_to_id: Mapped[UUID | None] = mapped_column(ForeignKey("message.id", ondelete="SET NULL"), default=None)
    provider_message_id: Mapped[str | None] = mapped_column(String(255), default=None)
    send_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None, index=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    failure_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    credit: Mapped[CreditState] = mapped_column(_enum(CreditState, 16), default=CreditState.NONE)


class Attempt(Base):
    """One try of one service of the chain for one message."""

    __tablename__ = "message_attempt"
    __table_args__ = (
        UniqueConstraint("message_id", "seq"),
        # receipts find the attempt by the provider's id
        Index("ix_message_attempt_provider_id", "organization_id", "service", "provider_message_id"),
        # the dashboard and /stats: attempts per service over the last days
        Index(
            "ix_message_attempt_org_started",
            "organization_id",
            "started_at",
            postgresql_include=["service", "outcome", "seq", "message_id"],
        ),
    )

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[UUID] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    service: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[AttemptOutcome] = mapped_column(_enum(AttemptOutcome, 16), default=AttemptOutcome.PENDING)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
    provider_message_id: Mapped[str | None] = mapped_column(String(255), default=None)
    started_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    #: the ``send_batch`` job carrying it (blast traffic); None: its own ``send_message`` job
    job_key: Mapped[str | None] = mapped_column(String(64), default=None)


class StatsDay(Base):
    """One figure of one closed UTC day of one organization, as :mod:`app.messaging.stats` counts it live
    (kept by :mod:`app.messaging.rollup`, decision 0032): ``kind`` names the figure and the time column
    its ``day`` is of — ``state`` (created_at; key: the state), ``delivered`` (created_at; key: the
    service), ``chain``/``fell_back`` (created_at; key: the servicechain id), ``attempt`` (started_at;
    key: the service, subkey: the outcome), ``spent`` (sent_at)."""

    __tablename__ = "message_stats_day"
    __table_args__ = (Index("ix_message_stats_day_org_day", "organization_id", "day"),)

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(64), default="")
    subkey: Mapped[str] = mapped_column(String(32), default="")
    count: Mapped[int] = mapped_column(Integer)


class StatsRollup(Base):
    """How far an organization's :class:`StatsDay` rows go: every day before ``rolled_until`` is rolled up,
    as the messages were at ``fresh_as_of``; a day of a message changed since is counted live."""

    __tablename__ = "message_stats_rollup"

    organization_id: Mapped[UUID] = mapped_column(
        ForeignKey("organization.id", ondelete="CASCADE"), unique=True, index=True
    )
    rolled_until: Mapped[date] = mapped_column(Date)
    fresh_as_of: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


class IdempotencyKey(Base):
    __tablename__ = "idempotency_key"
    __table_args__ = (UniqueConstraint("organization_id", "key"),)

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[UUID] = mapped_column(ForeignKey("message.id", ondelete="CASCADE"))
