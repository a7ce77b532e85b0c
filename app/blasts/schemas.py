"""Request and response types of blasts (msgspec)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from app.messaging.schemas import Content, Name, Struct

#: ids one request may name; a larger audience is a category
MAX_CONTACT_IDS = 10_000
MAX_CATEGORY_IDS = 100

BlastStateName = Literal["scheduled", "fanning_out", "sending", "completed", "cancelled"]


class BlastCreate(Struct):
    name: Name
    content: Content
    servicechain_id: UUID
    contact_ids: Annotated[list[UUID], msgspec.Meta(max_length=MAX_CONTACT_IDS)] = msgspec.field(default_factory=list)
    category_ids: Annotated[list[UUID], msgspec.Meta(max_length=MAX_CATEGORY_IDS)] = msgspec.field(default_factory=list)
    send_at: datetime | None = None


class Blast(msgspec.Struct):
    id: UUID
    organization_id: UUID
    name: str
    content: str
    servicechain_id: UUID | None
    state: BlastStateName
    send_at: datetime | None
    #: contacts that get a message (opted-out ones are not part of it)
    audience: int
    skipped_opted_out: int
    #: messages per state, plus ``skipped_opted_out`` and ``not_created`` (members a cancel left without one)
    stats: dict[str, int]
    #: finished messages / audience, from 0.0 to 1.0
    progress: float
    started_at: datetime | None
    #: when it completed or was cancelled
    completed_at: datetime | None
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime
