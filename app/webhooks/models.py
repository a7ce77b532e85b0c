"""Outbound status webhooks: endpoints, the outbox of events, deliveries and their attempts."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import Boolean, Enum, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base

#: every event type an endpoint may subscribe to (``ping`` is sent by ``POST /webhooks/{id}/test`` only)
EVENT_TYPES = (
    "message.state_changed",
    "message.received",
    "contact.opted_out",
    "contact.opted_in",
    "blast.completed",
)
PING = "ping"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # the last attempt failed; another is scheduled
    GIVEN_UP = "given_up"  # the schedule is exhausted, or the endpoint was disabled


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoint"

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(500), default="")
    event_types: Mapped[list[str]] = mapped_column(JsonB, default=lambda: list(EVENT_TYPES))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: ``whsec_…`` encrypted with the credentials cipher (app/plugins/crypto.py)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    #: the secret before the last rotation, which signs beside the new one until ``previous_secret_expires_at``
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    disabled_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    #: the first failure since the last success (an endpoint failing for 3 days is disabled)
    failing_since: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class WebhookEvent(Base):
    """The outbox: written in the transaction of the change; the dispatcher fans it out to endpoints."""

    __tablename__ = "webhook_event"
    __table_args__ = (Index("ix_webhook_event_undispatched", "dispatched_at", "created_at"),)

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonB)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


def _status_enum() -> Enum:
    return Enum(
        DeliveryStatus,
        native_enum=False,
        length=16,
        validate_strings=True,
        values_callable=lambda e: [m.value for m in e],
    )


class WebhookDelivery(Base):
    """One event for one endpoint (the unit of retry and replay)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_delivery_event_endpoint"),
        Index("ix_webhook_delivery_endpoint_created", "endpoint_id", "created_at"),
    )

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[UUID] = mapped_column(ForeignKey("webhook_event.id", ondelete="CASCADE"))
    endpoint_id: Mapped[UUID] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    event_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[DeliveryStatus] = mapped_column(_status_enum(), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None, index=True)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempt"

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    delivery_id: Mapped[UUID] = mapped_column(ForeignKey("webhook_delivery.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    #: the first 1 KiB of the answer
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(String(1000), default=None)
