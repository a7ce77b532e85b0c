"""Request and response types of servicechains and messages (msgspec)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType

from app.textfields import Line, Text, pattern_rule

SERVICE_NAME_PATTERN = pattern_rule(
    r"^[a-z][a-z0-9_\-]*(?!\n)$", "A service name: a lower-case letter, then lower-case letters, digits, - or _."
)
ServiceName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=SERVICE_NAME_PATTERN)]
ServiceList = Annotated[list[ServiceName], msgspec.Meta(min_length=1, max_length=20)]
Name = Annotated[Line, msgspec.Meta(min_length=1, max_length=200)]
Content = Annotated[Text, msgspec.Meta(min_length=1, max_length=10_000)]
Description = Annotated[Line, msgspec.Meta(max_length=1000)]
StateName = Literal[
    "MSG_PENDING",
    "MSG_SENDING",
    "MSG_SENT",
    "MSG_DELIVERED_SERVICE",
    "MSG_DELIVERED_USER",
    "MSG_READ",
    "MSG_REPLIED",
    "MSG_FAILED",
    "MSG_RECEIVED",
]


class Struct(msgspec.Struct, forbid_unknown_fields=True):
    """Request bodies refuse unknown fields."""


class Servicechain(msgspec.Struct):
    id: UUID
    organization_id: UUID
    name: str
    description: str
    services: list[str]
    created_at: datetime
    updated_at: datetime


class ServicechainCreate(Struct):
    name: Name
    services: ServiceList
    description: Description = ""


class ServicechainUpdate(Struct):
    name: Name | UnsetType = UNSET
    services: ServiceList | UnsetType = UNSET
    description: Description | UnsetType = UNSET


class Attempt(msgspec.Struct):
    service: str
    outcome: Literal["pending", "sent", "failed", "undelivered"]
    error: str | None
    provider_message_id: str | None
    started_at: datetime
    finished_at: datetime | None


class Message(msgspec.Struct):
    id: UUID
    organization_id: UUID
    contact_id: UUID
    servicechain_id: UUID | None
    blast_id: UUID | None
    direction: Literal["outgoing", "incoming"]
    state: StateName
    service: str | None
    content: str
    reply_to: UUID | None
    provider_message_id: str | None
    send_at: datetime | None
    sent_at: datetime | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    attempts: list[Attempt] | UnsetType = UNSET


class MessageCreate(Struct):
    contact_id: UUID
    content: Content
    servicechain_id: UUID | None = None
    reply_to: UUID | None = None
    send_at: datetime | None = None


class Preview(Struct):
    contact_id: UUID
    content: Content


class Rendered(msgspec.Struct):
    content: str
