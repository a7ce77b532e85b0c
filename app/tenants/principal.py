"""Who is calling: a user (browser session or personal token) or an API client, with its scopes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from app.tenants.models import Role

ALL_SCOPES: tuple[str, ...] = (
    "contacts:read",
    "contacts:write",
    "messages:read",
    "messages:send",
    "blasts:read",
    "blasts:write",
    "servicechains:read",
    "servicechains:write",
    "users:admin",
)

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.SYSADMIN: frozenset(ALL_SCOPES),
    Role.ORG_ADMIN: frozenset(ALL_SCOPES),
    Role.USER: frozenset(s for s in ALL_SCOPES if s not in {"servicechains:write", "users:admin"}),
}

ROLE_RANK = {Role.USER: 0, Role.ORG_ADMIN: 1, Role.SYSADMIN: 2}


def unknown_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    return [s for s in scopes if s not in ALL_SCOPES]


@dataclass(frozen=True)
class Principal:
    kind: Literal["user", "client"]
    id: UUID
    name: str
    organization_id: UUID | None
    role: Role
    scopes: frozenset[str]
    email: str | None = None
    token_id: UUID | None = None
    #: the browser session (``web_session.id``) this principal came from, if any
    session_id: UUID | None = None
    #: the organization's API budget (requests a minute per token) when a sysadmin set one; None: the
    #: instance default (``app/tenants/request_limits.py``)
    rate_limit: int | None = None

    @property
    def is_sysadmin(self) -> bool:
        return self.kind == "user" and self.role == Role.SYSADMIN

    @property
    def is_org_admin(self) -> bool:
        """Org admin or above, for a user; for a client, holding the ``users:admin`` scope."""
        if self.kind == "client":
            return "users:admin" in self.scopes
        return ROLE_RANK[self.role] >= ROLE_RANK[Role.ORG_ADMIN]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def account_reach(self) -> Role:
        """The highest role of account this credential may manage (``users:admin`` aside).

        A client reaches ``user`` accounts only. A user reaches their own role, unless the credential
        is narrowed (a personal token without every scope of that role): then ``user`` accounts only.
        """
        if self.kind == "client" or not ROLE_SCOPES[self.role] <= self.scopes:
            return Role.USER
        return self.role

    def missing_scopes_of(self, role: Role) -> list[str]:
        """The scopes an account of ``role`` has that this credential lacks, in the usual order."""
        return [s for s in ALL_SCOPES if s in ROLE_SCOPES[role] and s not in self.scopes]
