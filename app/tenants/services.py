"""Business rules of organizations, API clients, tokens and password-reset links.

The user services live in ``app/tenants/users.py`` and are importable from here too."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService, is_dict
from sqlalchemy import select, update
from sqlalchemy.orm import noload

from app.clock import aware, utcnow
from app.db.scoping import OrgScopedRepository, OrgScopedService, references_own_row
from app.errors import Conflict, Forbidden, ValidationProblem
from app.tenants.models import (
    AccessToken,
    ApiClient,
    Organization,
    PasswordResetToken,
    TokenKind,
    User,
)
from app.tenants.principal import ROLE_SCOPES, Principal, unknown_scopes
from app.tenants.security import hash_secret, new_secret

# the user services (app/tenants/users.py), importable from here as before the split
from app.tenants.users import AccountRepository as AccountRepository
from app.tenants.users import AccountService as AccountService
from app.tenants.users import UserRepository as UserRepository
from app.tenants.users import UserService as UserService
from app.tenants.users import _check_role_assignment as _check_role_assignment

# ---------------------------------------------------------------- organizations (instance-wide)


class OrganizationRepository(SQLAlchemyAsyncRepository[Organization]):
    model_type = Organization
    count_with_window_function = False  # a true total on pages past the end


class OrganizationService(SQLAlchemyAsyncRepositoryService[Organization]):
    repository_type = OrganizationRepository
    count_with_window_function = False  # a true total on pages past the end
    match_fields = ["name"]

    async def to_model_on_create(self, data: Any) -> Any:
        if is_dict(data):
            data["name"] = data["name"].strip()
            if await self.exists(Organization.name == data["name"]):
                raise Conflict(f"An organization named {data['name']!r} already exists.")
        return data

    async def to_model_on_update(self, data: Any) -> Any:
        if is_dict(data) and "name" in data:
            data["name"] = data["name"].strip()
        return data

    async def update_own(self, organization_id: UUID, changes: dict[str, Any]) -> Organization:
        """What an org admin may change of their own organization: its default servicechain (None clears it).

        The chain must be one of the organization's own: another organization's id is refused exactly as
        an unknown one, and nothing is stored."""
        org = await self.get(organization_id)
        if "default_servicechain_id" in changes:
            chain_id = changes["default_servicechain_id"]
            if chain_id is not None:
                column = Organization.default_servicechain_id
                if not await references_own_row(self.repository.session, column, organization_id, chain_id):
                    raise ValidationProblem("No such servicechain in this organization.", "default_servicechain_id")
            org.default_servicechain_id = chain_id
        return await self.repository.update(org)


# ---------------------------------------------------------------- API clients


class ApiClientRepository(OrgScopedRepository[ApiClient]):
    model_type = ApiClient


class ApiClientService(OrgScopedService[ApiClient]):
    repository_type = ApiClientRepository

    async def create_client(self, actor: Principal, name: str, scopes: list[str]) -> tuple[ApiClient, str]:
        bad = unknown_scopes(scopes)
        if bad:
            raise ValidationProblem(f"Unknown scopes: {', '.join(bad)}", "scopes")
        # users and clients alike: a credential never mints a broader one
        beyond = [s for s in scopes if s not in actor.scopes]
        if beyond:
            raise Forbidden(f"You cannot grant scopes you do not hold: {', '.join(beyond)}")
        secret = new_secret("vcs")
        client = await self.create(
            ApiClient(
                name=name.strip(),
                client_id=new_secret("vcl", 12),
                secret_hash=hash_secret(secret),
                scopes=sorted(set(scopes)),
                created_by_id=actor.id if actor.kind == "user" else None,
            )
        )
        return client, secret

    async def revoke(self, client_id: UUID) -> ApiClient:
        client = await self.get(client_id)
        if client.revoked_at is None:
            client.revoked_at = utcnow()
            await self.repository.update(client)
            tokens = await self.repository.session.scalars(
                select(AccessToken).where(AccessToken.api_client_id == client.id, AccessToken.revoked_at.is_(None))
            )
            for token in tokens:
                token.revoked_at = client.revoked_at
        return client


# ---------------------------------------------------------------- bearer tokens


class InstanceApiClientRepository(SQLAlchemyAsyncRepository[ApiClient]):
    model_type = ApiClient
    count_with_window_function = False  # a true total on pages past the end


class InstanceApiClientService(SQLAlchemyAsyncRepositoryService[ApiClient]):
    """Every organization's API clients: the sysadmin's listing only, never a tenant's."""

    repository_type = InstanceApiClientRepository
    count_with_window_function = False  # a true total on pages past the end


class TokenRepository(SQLAlchemyAsyncRepository[AccessToken]):
    model_type = AccessToken
    count_with_window_function = False  # a true total on pages past the end


class TokenService(SQLAlchemyAsyncRepositoryService[AccessToken]):
    """Bearer tokens. Personal tokens are always listed through :meth:`for_user` (owner-scoped)."""

    repository_type = TokenRepository
    count_with_window_function = False  # a true total on pages past the end

    async def create_personal(
        self,
        user: User,
        name: str,
        scopes: Sequence[str] | None,
        expires_in_days: int | None,
        within: frozenset[str] | None = None,
    ) -> tuple[AccessToken, str]:
        """A new token of ``user``; ``within`` is the scopes of the credential asking for it, if any."""
        allowed = ROLE_SCOPES[user.role]
        wanted = list(allowed) if scopes is None else list(scopes)
        bad = unknown_scopes(wanted)
        if bad:
            raise ValidationProblem(f"Unknown scopes: {', '.join(bad)}", "scopes")
        beyond = [s for s in wanted if s not in allowed]
        if beyond:
            raise Forbidden(f"Your role does not allow these scopes: {', '.join(beyond)}")
        beyond = [s for s in wanted if within is not None and s not in within]
        if beyond:
            raise Forbidden(f"A token cannot create a token with more scopes than its own: {', '.join(beyond)}")
        raw = new_secret("vol_pat")
        token = await self.create(
            AccessToken(
                kind=TokenKind.PERSONAL,
                name=name.strip(),
                token_hash=hash_secret(raw),
                prefix=raw[:12],
                organization_id=user.organization_id,
                user_id=user.id,
                scopes=sorted(set(wanted)),
                expires_at=utcnow() + timedelta(days=expires_in_days) if expires_in_days else None,
            )
        )
        return token, raw

    async def issue_for_client(self, client: ApiClient, raw: str, scopes: list[str], expires_in: int) -> AccessToken:
        return await self.create(
            AccessToken(
                kind=TokenKind.OAUTH,
                name=client.name,
                token_hash=hash_secret(raw),
                prefix=raw[:12],
                organization_id=client.organization_id,
                api_client_id=client.id,
                scopes=scopes,
                expires_at=utcnow() + timedelta(seconds=expires_in),
            ),
            auto_commit=True,
        )

    def for_user(self, user_id: UUID) -> Any:
        return [AccessToken.user_id == user_id, AccessToken.kind == TokenKind.PERSONAL]

    async def get_personal(self, user_id: UUID, token_id: UUID) -> AccessToken:
        token = await self.get_one_or_none(AccessToken.id == token_id, *self.for_user(user_id))
        if token is None:
            raise NotFoundError("Token not found")
        return token

    async def revoke_personal(self, user_id: UUID, token_id: UUID) -> AccessToken:
        token = await self.get_personal(user_id, token_id)
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            await self.repository.update(token)
        return token

    async def resolve(self, raw: str) -> tuple[AccessToken, User | ApiClient, Organization | None] | None:
        """The live token for a raw bearer string with its owner and organization, or None."""
        return await self.resolve_hash(hash_secret(raw))

    async def resolve_hash(
        self, token_hash: str
    ) -> tuple[AccessToken, User | ApiClient, Organization | None] | None:
        """:meth:`resolve` by the token's hash. One query (the API runs it at most once a second per token
        and process: ``app.tenants.tokencache``)."""
        row = (
            await self.repository.session.execute(
                select(AccessToken, User, ApiClient, Organization)
                .outerjoin(User, User.id == AccessToken.user_id)
                .outerjoin(ApiClient, ApiClient.id == AccessToken.api_client_id)
                .outerjoin(Organization, Organization.id == AccessToken.organization_id)
                .where(AccessToken.token_hash == token_hash)
                .options(noload(User.organization))
            )
        ).first()
        if row is None:
            return None
        token, user, client, org = row
        if token.revoked_at is not None:
            return None
        expires_at = aware(token.expires_at)
        if expires_at is not None and expires_at <= utcnow():
            return None
        owner: User | ApiClient
        if token.user_id is not None:
            if user is None or not user.is_active:
                return None
            owner = user
        else:
            if client is None or client.revoked_at is not None:
                return None
            owner = client
        return token, owner, org


# ---------------------------------------------------------------- password reset


class PasswordResetRepository(SQLAlchemyAsyncRepository[PasswordResetToken]):
    model_type = PasswordResetToken


class PasswordResetService(SQLAlchemyAsyncRepositoryService[PasswordResetToken]):
    repository_type = PasswordResetRepository

    async def issue(self, user: User, ttl_seconds: int, request_id: str | None = None) -> str | None:
        """A fresh raw token for the request; None when this request was already mailed."""
        row = await self.get_one_or_none(PasswordResetToken.request_id == request_id) if request_id else None
        if row is not None and (row.mailed_at is not None or row.user_id != user.id):
            return None
        raw = new_secret("vrt")
        expires_at = utcnow() + timedelta(seconds=ttl_seconds)
        if row is None:
            await self.create(
                PasswordResetToken(
                    user_id=user.id, token_hash=hash_secret(raw), expires_at=expires_at, request_id=request_id
                )
            )
        else:  # a re-run after a crash: the old raw token was never mailed, so rotate it
            row.token_hash = hash_secret(raw)
            row.expires_at = expires_at
            await self.repository.update(row)
        return raw

    async def mark_mailed(self, request_id: str) -> None:
        row = await self.get_one_or_none(PasswordResetToken.request_id == request_id)
        if row is not None:
            row.mailed_at = utcnow()
            await self.repository.update(row)

    async def valid(self, raw: str) -> PasswordResetToken | None:
        row = await self.get_one_or_none(PasswordResetToken.token_hash == hash_secret(raw))
        if row is None or row.used_at is not None:
            return None
        expires_at = aware(row.expires_at)
        if expires_at is None or expires_at <= utcnow():
            return None
        return row

    async def consume(self, raw: str, password: str, accounts: AccountService) -> User | None:
        """Set the password through a link; None when the link is not (or no longer) valid.

        The link is claimed with one conditional UPDATE, so two requests racing with the same link
        cannot both use it; setting the password then ends the user's sessions and revokes every
        other outstanding link of the user."""
        row = await self.valid(raw)
        if row is None:
            return None
        claimed = await self.repository.session.execute(
            update(PasswordResetToken)
            .where(PasswordResetToken.id == row.id, PasswordResetToken.used_at.is_(None))
            .values(used_at=utcnow())
        )
        if claimed.rowcount != 1:
            return None
        user = await accounts.get(row.user_id)
        await accounts.set_password(user, password)
        return user
