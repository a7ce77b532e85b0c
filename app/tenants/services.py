"""Business rules of organizations, users, API clients and tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from advanced_alchemy.exceptions import NotFoundError
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService, is_dict
from sqlalchemy import exists, select, update
from sqlalchemy.orm import noload

from app.clock import aware, utcnow
from app.db.scoping import references_own_row
from app.errors import Conflict, Forbidden, ValidationProblem
from app.tenants.models import (
    AccessToken,
    ApiClient,
    Organization,
    PasswordResetToken,
    Role,
    TokenKind,
    User,
)
from app.tenants.principal import ROLE_RANK, ROLE_SCOPES, Principal, unknown_scopes
from app.tenants.scoping import OrgScopedRepository, OrgScopedService
from app.tenants.security import (
    hash_password,
    hash_secret,
    new_secret,
    password_needs_rehash,
    password_problem,
    verify_password,
)
from app.tenants.sessions import end_user_sessions

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


# ---------------------------------------------------------------- users


def _check_reach(actor: Principal, role: Role | str) -> None:
    """Changing or removing an account needs a credential that reaches its role (see ``account_reach``)."""
    role = Role(role)
    if ROLE_RANK[role] <= ROLE_RANK[actor.account_reach]:
        return
    if role == Role.SYSADMIN and not actor.is_sysadmin:
        raise Forbidden("Only a sysadmin can change a sysadmin.")
    if actor.kind == "client":
        raise Forbidden(f"An API client can manage accounts of the user role only, not {role.value} accounts.")
    if ROLE_RANK[role] > ROLE_RANK[actor.role]:
        raise Forbidden("You cannot manage an account whose role is above your own.")
    missing = ", ".join(actor.missing_scopes_of(role))
    raise Forbidden(
        f"This token lacks scopes of the {role.value} role ({missing}): it cannot manage {role.value} accounts."
    )


def _check_role_assignment(actor: Principal, role: Role | str) -> None:
    """Creating an account or giving it a role, a password or an email decides who signs in with what:
    a credential may do it only for a role it reaches and whose every scope it holds — it never mints
    (or seizes) a broader credential than itself."""
    role = Role(role)
    if role == Role.SYSADMIN and not actor.is_sysadmin:
        raise Forbidden("Only a sysadmin can grant the sysadmin role.")
    if actor.kind == "user" and ROLE_RANK[role] > ROLE_RANK[actor.role]:
        raise Forbidden("You cannot grant a role above your own.")
    _check_reach(actor, role)
    missing = actor.missing_scopes_of(role)
    if missing:
        raise Forbidden(
            f"This credential lacks scopes of the {role.value} role ({', '.join(missing)}): it cannot create "
            f"{role.value} accounts or set their password or email."
        )


def _check_sets_password(actor: Principal, role: Role | str) -> None:
    if actor.kind == "client":
        raise Forbidden(
            "An API client cannot set passwords. Create the user without one: they are mailed a link to choose it."
        )
    _check_role_assignment(actor, role)


async def _revoke_reset_links(session: Any, user_id: UUID) -> None:
    """Every outstanding password-reset (or invitation) link of the user stops working."""
    await session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user_id, PasswordResetToken.used_at.is_(None))
        .values(used_at=utcnow())
    )


class _UserRules:
    """Rules shared by the organization-scoped and the instance-wide user services."""

    async def _normalise(self, data: Any, *, creating: bool) -> Any:
        if not is_dict(data):
            return data
        if "email" in data:
            data["email"] = data["email"].strip().lower()
            # emails are unique across the instance (they are the login), so look beyond this organization
            session = self.repository.session  # type: ignore[attr-defined]
            if await session.scalar(select(exists().where(User.email == data["email"]))):
                raise Conflict("A user with this email already exists.")
        password = data.pop("password", None)
        if password is not None:
            problem = password_problem(password)
            if problem:
                raise ValidationProblem(problem, "password")
            data["password_hash"] = hash_password(password)
        return data

    async def to_model_on_create(self, data: Any) -> Any:
        return await self._normalise(data, creating=True)

    async def create_user(self, actor: Principal, data: dict[str, Any]) -> User:
        """A new account made by ``actor``, within what ``actor`` may grant."""
        role = Role(data.get("role", Role.USER))
        _check_role_assignment(actor, role)
        if data.get("password") is not None:
            _check_sets_password(actor, role)
        user: User = await self.create(data)  # type: ignore[attr-defined]
        return user

    async def update_user(self, actor: Principal, user_id: UUID, changes: dict[str, Any]) -> User:
        user: User = await self.get(user_id)  # type: ignore[attr-defined]
        session = self.repository.session  # type: ignore[attr-defined]
        myself = actor.kind == "user" and user.id == actor.id
        _check_reach(actor, user.role)
        if "role" in changes and Role(changes["role"]) == user.role:
            changes.pop("role")
        if "role" in changes:
            _check_role_assignment(actor, changes["role"])
            if myself:
                raise Forbidden("You cannot change your own role.")
            if (user.organization_id is None) != (Role(changes["role"]) == Role.SYSADMIN):
                raise ValidationProblem(
                    "Sysadmins have no organization; organization members cannot be sysadmins.", "role"
                )
        role = Role(changes.get("role", user.role))
        if "email" in changes and changes["email"].strip().lower() == user.email:
            changes.pop("email")
        if "email" in changes:
            _check_role_assignment(actor, role)  # the email decides where a reset link goes
        password_changed = "password" in changes
        if password_changed:
            _check_sets_password(actor, role)
        if changes.get("is_active") is False and myself:
            raise Forbidden("You cannot deactivate yourself.")
        email_changed = "email" in changes
        changes = await self._normalise(changes, creating=False)
        for key, value in changes.items():
            setattr(user, key, value)
        if password_changed or email_changed:
            await _revoke_reset_links(session, user.id)
        if password_changed or changes.get("is_active") is False:
            await end_user_sessions(session, user.id)  # every browser signed in as this user is signed out
        return await self.repository.update(user)  # type: ignore[attr-defined]

    async def remove_user(self, actor: Principal, user_id: UUID) -> None:
        user: User = await self.get(user_id)  # type: ignore[attr-defined]
        if actor.kind == "user" and user.id == actor.id:
            raise Forbidden("You cannot remove yourself.")
        _check_reach(actor, user.role)
        await self.delete(user_id)  # type: ignore[attr-defined]


class UserRepository(OrgScopedRepository[User]):
    model_type = User


class UserService(_UserRules, OrgScopedService[User]):
    """Users of one organization (what an org admin manages)."""

    repository_type = UserRepository


class AccountRepository(SQLAlchemyAsyncRepository[User]):
    model_type = User
    count_with_window_function = False  # a true total on pages past the end


class AccountService(_UserRules, SQLAlchemyAsyncRepositoryService[User]):
    """Instance-wide view of accounts: login, sessions, sysadmin tools. Not for tenant listings."""

    repository_type = AccountRepository
    count_with_window_function = False  # a true total on pages past the end

    async def get_by_email(self, email: str) -> User | None:
        return await self.get_one_or_none(User.email == email.strip().lower())

    async def authenticate(self, email: str, password: str) -> User | None:
        user = await self.get_by_email(email)
        ok = verify_password(user.password_hash if user else None, password)
        if not ok or user is None or not user.is_active:
            return None
        if user.password_hash and password_needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        user.last_login_at = utcnow()
        await self.repository.update(user)
        return user

    async def set_password(self, user: User, password: str) -> User:
        """A new password: every session of the user ends and every outstanding reset link stops working.

        A browser that should stay signed in (changing one's own password) starts a new session after."""
        problem = password_problem(password)
        if problem:
            raise ValidationProblem(problem, "password")
        user.password_hash = hash_password(password)
        await end_user_sessions(self.repository.session, user.id)
        await _revoke_reset_links(self.repository.session, user.id)
        return await self.repository.update(user)

    async def create_or_reset_sysadmin(self, email: str, password: str, name: str = "Sysadmin") -> User:
        user = await self.get_by_email(email)
        if user is None:
            return await self.create(
                {"email": email, "name": name, "password": password, "role": Role.SYSADMIN}, auto_commit=True
            )
        user.role = Role.SYSADMIN
        user.organization_id = None
        user.is_active = True
        await self.set_password(user, password)
        await self.repository.session.commit()
        return user


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
        """The live token for a raw bearer string with its owner and organization, or None.

        One query: every API request runs it."""
        row = (
            await self.repository.session.execute(
                select(AccessToken, User, ApiClient, Organization)
                .outerjoin(User, User.id == AccessToken.user_id)
                .outerjoin(ApiClient, ApiClient.id == AccessToken.api_client_id)
                .outerjoin(Organization, Organization.id == AccessToken.organization_id)
                .where(AccessToken.token_hash == hash_secret(raw))
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
