"""Request and response types of the account resources (msgspec)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType

from app.textfields import Line, VisibleLine, pattern_rule

RoleName = Literal["sysadmin", "org_admin", "user"]
PlanName = Literal["PAY_IN_ADVANCE", "PAYG"]
Name = Annotated[
    VisibleLine, msgspec.Meta(min_length=1, max_length=200, description="Visible text, no control characters.")
]
EMAIL_PATTERN = pattern_rule(
    r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+\.[^@\s\x00-\x1f\x7f-\x9f]+(?!\n)$",
    "Enter a valid email address, like name@example.com (no spaces or control characters).",
)
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320, pattern=EMAIL_PATTERN)]
# The length rule lives in one place, app.tenants.security.password_problem (a 422 with a field error),
# shared with the browser forms; the schema only caps the size (and refuses control characters, as the
# forms do: a password that cannot be typed into the sign-in page would lock its owner out).
Password = Annotated[Line, msgspec.Meta(max_length=1024, description="At least 10 characters.")]
Credits = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
RateBudget = Annotated[
    int,
    msgspec.Meta(
        ge=1, le=1_000_000, description="API requests a minute per token or API client; null: the instance default."
    ),
]
ScopeList = Annotated[list[Annotated[Line, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=20)]


class Struct(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Request bodies refuse unknown fields."""


class Organization(msgspec.Struct):
    id: UUID
    name: str
    plan: PlanName
    credits: int
    credits_reserved: int
    suspended: bool
    created_at: datetime
    updated_at: datetime
    #: the chain a message uses when neither the request nor the contact names one
    default_servicechain_id: UUID | None
    #: API requests a minute per token or API client (set by a sysadmin); None: the instance default
    api_rate_limit: int | None


class OwnOrganizationUpdate(Struct):
    """``PATCH /organization``: what an org admin may change of their own organization."""

    default_servicechain_id: UUID | UnsetType | None = UNSET


class CreditsAdd(Struct):
    amount: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]


class OrganizationCreate(Struct):
    name: Name
    plan: PlanName = "PAYG"
    credits: Credits = 0
    suspended: bool = False
    api_rate_limit: RateBudget | None = None


class OrganizationUpdate(Struct):
    name: Name | UnsetType = UNSET
    plan: PlanName | UnsetType = UNSET
    credits: Credits | UnsetType = UNSET
    suspended: bool | UnsetType = UNSET
    api_rate_limit: RateBudget | UnsetType | None = UNSET


class User(msgspec.Struct):
    id: UUID
    email: str
    name: str
    role: RoleName
    organization_id: UUID | None
    is_active: bool
    last_login_at: datetime | None
    created_at: datetime
    updated_at: datetime


class UserCreate(Struct):
    email: Email
    name: Name
    role: RoleName = "user"
    password: Password | None = None
    organization_id: UUID | None = None


class UserUpdate(Struct):
    email: Email | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    role: RoleName | UnsetType = UNSET
    password: Password | UnsetType = UNSET
    is_active: bool | UnsetType = UNSET


class ApiClient(msgspec.Struct):
    id: UUID
    organization_id: UUID
    name: str
    client_id: str
    scopes: list[str]
    revoked: bool
    created_at: datetime
    updated_at: datetime
    client_secret: str | UnsetType = UNSET


class ApiClientCreate(Struct):
    name: Name
    scopes: ScopeList
    organization_id: UUID | None = None  # a sysadmin names the organization; others may only name their own


class PersonalToken(msgspec.Struct):
    id: UUID
    name: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool
    created_at: datetime
    updated_at: datetime
    token: str | UnsetType = UNSET


class PersonalTokenCreate(Struct):
    name: Name
    scopes: ScopeList | None = None
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = 90


class Me(msgspec.Struct):
    kind: Literal["user", "client"]
    id: UUID
    name: str
    email: str | None
    role: RoleName
    organization: Organization | None
    scopes: list[str]
