"""Turning credentials into a :class:`Principal`: bearer tokens (API) and session cookies (browser)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any
from uuid import UUID

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import aware, utcnow
from app.db.config import database_message, request_session
from app.logging import get_logger
from app.tenants.models import AccessToken, ApiClient, Organization, Role, User
from app.tenants.principal import ROLE_SCOPES, Principal
from app.tenants.security import hash_secret
from app.tenants.services import TokenService
from app.tenants.tokencache import TOKEN_CACHE, Resolved

log = get_logger(__name__)


def session_maker(connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
    state = connection.app.state
    return state[state["session_maker_key"]]


def principal_for_user(user: User, scopes: frozenset[str] | None = None, token_id: UUID | None = None) -> Principal:
    allowed = ROLE_SCOPES[user.role]
    return Principal(
        kind="user",
        id=user.id,
        name=user.name,
        email=user.email,
        organization_id=user.organization_id,
        role=user.role,
        scopes=allowed if scopes is None else allowed & scopes,
        token_id=token_id,
    )


def check_organization(org: Organization | None, role: Role) -> None:
    if role != Role.SYSADMIN and (org is None or org.suspended):
        raise PermissionDeniedException("This organization is suspended.")


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """``Authorization: Bearer <token>`` for ``/api``: 401 without a live token, 403 if suspended.

    A token is looked up at most once a second per process (:mod:`app.tenants.tokencache`); the lookup
    runs in the request's own session, the one the handler then uses (one connection, one transaction
    per request)."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise NotAuthorizedException("Missing bearer token.", headers={"WWW-Authenticate": "Bearer"})
        token_hash = hash_secret(raw.strip())
        state = connection.app.state
        ttl = state["settings"].security.token_cache_seconds
        hit = TOKEN_CACHE.get(token_hash, ttl) if ttl > 0 else None
        if hit is None and ttl > 0:
            # one lookup per token at a time: the requests that miss together wait for it
            async with TOKEN_CACHE.lookup_lock(token_hash):
                hit = TOKEN_CACHE.get(token_hash, ttl)
                if hit is None:
                    hit = await _resolve(request_session(connection), token_hash)
                    TOKEN_CACHE.put(token_hash, hit.principal, hit.token_id, hit.expires_at)
        elif hit is None:
            hit = await _resolve(request_session(connection), token_hash)
        return AuthenticationResult(user=hit.principal, auth=hit.token_id)


async def _resolve(session: AsyncSession, token_hash: str) -> Resolved:
    """Look the token up; the read transaction is over when this returns (the handler may start a write)."""
    try:
        resolved = await TokenService(session=session).resolve_hash(token_hash)
        if resolved is None:
            raise NotAuthorizedException(
                "Invalid, expired or revoked token.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        token, owner, org = resolved
        scopes = frozenset(token.scopes)
        if isinstance(owner, ApiClient):
            check_organization(org, Role.USER)
            principal = Principal(
                kind="client",
                id=owner.id,
                name=owner.name,
                organization_id=owner.organization_id,
                role=Role.USER if "users:admin" not in scopes else Role.ORG_ADMIN,
                scopes=scopes & frozenset(owner.scopes),
                token_id=token.id,
            )
        else:
            check_organization(org, owner.role)
            principal = principal_for_user(owner, scopes, token.id)
        # API rate limits (app/tenants/request_limits.py): the organization's own budget rides on the principal
        if org is not None and org.api_rate_limit is not None:
            principal = dataclasses.replace(principal, rate_limit=org.api_rate_limit)
        result = Resolved(principal, token.id, token.expires_at, 0.0)
        now = utcnow()
        last = token.last_used_at
        if last is None or (now - aware(last)).total_seconds() > 60:
            await _record_use(session, token, now)
    finally:
        if session.in_transaction():
            await session.rollback()
    return result


async def _record_use(session: AsyncSession, token: AccessToken, now: datetime) -> None:
    """Stamp ``last_used_at`` (to the minute: no write on every request). Best effort: a busy database
    delays the stamp to a later request, it never fails this one."""
    token_id = token.id
    token.last_used_at = now
    try:
        await session.commit()
    except SQLAlchemyError as exc:
        await session.rollback()
        log.warning("token last_used_at not recorded", token_id=str(token_id), error=database_message(exc))
