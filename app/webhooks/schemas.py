"""Request and response types of ``/webhooks`` (msgspec)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType

from app.textfields import Line

EventType = Literal[
    "message.state_changed", "message.received", "contact.opted_out", "contact.opted_in", "blast.completed"
]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
EventTypes = Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=10)]
Description = Annotated[Line, msgspec.Meta(max_length=500)]


class Struct(msgspec.Struct, forbid_unknown_fields=True):
    """Request bodies refuse unknown fields."""


class WebhookCreate(Struct):
    url: Url
    event_types: EventTypes | UnsetType = UNSET
    enabled: bool = True
    description: Description = ""


class WebhookUpdate(Struct):
    url: Url | UnsetType = UNSET
    event_types: EventTypes | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    description: Description | UnsetType = UNSET


class Webhook(msgspec.Struct):
    id: UUID
    organization_id: UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    #: why the endpoint was disabled by the system (3 days without a success); null otherwise
    disabled_reason: str | None
    last_success_at: datetime | None
    failing_since: datetime | None
    #: when the secret before the last rotation stops signing beside the new one
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    #: ``whsec_…``: only in the answer of the creation and of ``rotate-secret``
    secret: str | UnsetType = UNSET


class DeliveryAttempt(msgspec.Struct):
    id: UUID
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    response_body: str | None
    error: str | None


class Delivery(msgspec.Struct):
    id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: str
    status: Literal["pending", "delivered", "failed", "given_up"]
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    attempts: list[DeliveryAttempt] = msgspec.field(default_factory=list)
