"""Organizations, users, browser sessions, API clients, bearer tokens and password-reset tokens."""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import UUID

from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import Boolean, Enum, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base


class Role(enum.StrEnum):
    SYSADMIN = "sysadmin"
    ORG_ADMIN = "org_admin"
    USER = "user"


class Plan(enum.StrEnum):
    PAY_IN_ADVANCE = "PAY_IN_ADVANCE"
    PAYG = "PAYG"


class Organization(Base):
    __tablename__ = "organization"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    plan: Mapped[Plan] = mapped_column(
        Enum(Plan, native_enum=False, length=20, validate_strings=True), default=Plan.PAYG
    )
    credits: Mapped[int] = mapped_column(Integer, default=0)
    #: credits held by accepted messages that are not sent or failed yet
    credits_reserved: Mapped[int] = mapped_column(Integer, default=0)
    suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the chain a message uses when neither the request nor the contact names one. ``servicechain`` rows
    #: reference ``organization`` too: ``use_alter`` breaks the cycle for CREATE/DROP ordering.
    default_servicechain_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("servicechain.id", ondelete="SET NULL", use_alter=True), default=None
    )
    #: API requests a minute per token (or API client), set by a sysadmin; None: the instance default
    #: (``VOLUBLE_API_RATE_LIMIT``). See app/tenants/request_limits.py.
    api_rate_limit: Mapped[int | None] = mapped_column(Integer, default=None)


class User(Base):
    __tablename__ = "user_account"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255), default=None)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=20, validate_strings=True))
    organization_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("organization.id", ondelete="CASCADE"), index=True, default=None
    )
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    organization: Mapped[Organization | None] = relationship(lazy="joined", innerjoin=False)


class WebSession(Base):
    """A signed-in browser. The cookie carries a random id; only its SHA-256 hash is stored here.

    Looked up on every page request, so ending a session (logout, password change or reset, "sign
    out everywhere", deactivation) takes effect at once in every web process."""

    __tablename__ = "web_session"

    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    #: written at most once a minute, not on every request
    last_seen_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(300), default="")


class ApiClient(Base):
    """An OAuth 2 client (client_credentials grant) that belongs to one organization."""

    __tablename__ = "api_client"

    organization_id: Mapped[UUID] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column(JsonB, default=list)
    created_by_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="SET NULL"), default=None
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class TokenKind(enum.StrEnum):
    OAUTH = "oauth"
    PERSONAL = "personal"


class AccessToken(Base):
    """An opaque bearer token, stored only as its SHA-256 hash."""

    __tablename__ = "access_token"

    kind: Mapped[TokenKind] = mapped_column(Enum(TokenKind, native_enum=False, length=20, validate_strings=True))
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    organization_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("organization.id", ondelete="CASCADE"), index=True, default=None
    )
    user_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True, default=None
    )
    api_client_id: Mapped[UUID | None] = mapped_column(
        ForeignKey("api_client.id", ondelete="CASCADE"), index=True, default=None
    )
    scopes: Mapped[list[str]] = mapped_column(JsonB, default=list)
    expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class PasswordResetToken(Base):
    __tablename__ = "password_reset_token"

    user_id: Mapped[UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    # The reset request this token answers: a re-run of the mail job reuses the row, never mails twice.
    request_id: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    mailed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
