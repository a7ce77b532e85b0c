"""Request and response types of contacts, categories and CSV imports (msgspec)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType

from app.textfields import Line, Text

# Raw input lengths. The services normalise further (E.164 phones, lowercased e-mail addresses).
Title = Annotated[Line, msgspec.Meta(max_length=50)]
PersonName = Annotated[Line, msgspec.Meta(max_length=100)]
PhoneInput = Annotated[Line, msgspec.Meta(max_length=64, description="Any common notation; stored as E.164.")]
EmailInput = Annotated[Line, msgspec.Meta(max_length=320)]
TelegramChatId = Annotated[
    Line, msgspec.Meta(max_length=64, description="A numeric Telegram chat id, or a @channel username.")
]
Notes = Annotated[Text, msgspec.Meta(max_length=5000)]
CategoryIds = Annotated[list[UUID], msgspec.Meta(max_length=200)]
CategoryName = Annotated[Line, msgspec.Meta(min_length=1, max_length=100)]
Description = Annotated[Line, msgspec.Meta(max_length=500)]


class Struct(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Request bodies refuse unknown fields."""


# ---------------------------------------------------------------- categories


class Category(msgspec.Struct):
    id: UUID
    organization_id: UUID
    name: str
    description: str | None
    created_at: datetime
    updated_at: datetime


class CategoryCreate(Struct):
    name: CategoryName
    description: Description | None = None


class CategoryUpdate(Struct):
    name: CategoryName | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET


# ---------------------------------------------------------------- contacts


class Contact(msgspec.Struct):
    id: UUID
    organization_id: UUID
    title: str | None
    first_name: str | None
    surname: str | None
    phone: str | None
    email: str | None
    telegram_chat_id: str | None
    category_ids: list[UUID]
    servicechain_id: UUID | None
    opted_out: bool
    opted_out_at: datetime | None
    opted_out_via: str | None
    is_unknown: bool
    notes: str | None
    created_at: datetime
    updated_at: datetime


class ContactDetail(Contact):
    """One contact as ``GET /contacts/{id}`` answers it: with the link that ties a Telegram chat to them."""

    #: ``https://t.me/<bot username>?start=<token>``; null while the organization has no Telegram bot
    telegram_link: str | None = None


class ContactCreate(Struct):
    title: Title | None = None
    first_name: PersonName | None = None
    surname: PersonName | None = None
    phone: PhoneInput | None = None
    email: EmailInput | None = None
    telegram_chat_id: TelegramChatId | None = None
    category_ids: CategoryIds = msgspec.field(default_factory=list)
    servicechain_id: UUID | None = None
    opted_out: bool = False
    notes: Notes | None = None


class ContactUpdate(Struct):
    title: Title | UnsetType | None = UNSET
    first_name: PersonName | UnsetType | None = UNSET
    surname: PersonName | UnsetType | None = UNSET
    phone: PhoneInput | UnsetType | None = UNSET
    email: EmailInput | UnsetType | None = UNSET
    telegram_chat_id: TelegramChatId | UnsetType | None = UNSET
    category_ids: CategoryIds | UnsetType = UNSET
    servicechain_id: UUID | UnsetType | None = UNSET
    opted_out: bool | UnsetType = UNSET
    is_unknown: bool | UnsetType = UNSET
    notes: Notes | UnsetType | None = UNSET


# ---------------------------------------------------------------- CSV import


class ImportRowError(msgspec.Struct):
    row: int  # line number in the file; the header is line 1
    errors: dict[str, str]  # column -> message; "_row" for a problem of the whole row


class ImportReport(msgspec.Struct):
    created: int
    updated: int
    rejected: int
    errors: list[ImportRowError]
