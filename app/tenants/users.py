"""Business rules of user accounts: who may create, change or remove which account, with which role,
password or email (``UserService`` for one organization, ``AccountService`` instance-wide).

Who manages whose accounts on behalf of a caller (an org admin, a sysadmin) is ``app/tenants/accounts.py``."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService, is_dict
from sqlalchemy import exists, select, update

from app.clock import utcnow
from app.db.scoping import OrgScopedRepository, OrgScopedService
from app.errors import Conflict, Forbidden, ValidationProblem
from app.tenants.models import PasswordResetToken, Role, User
from app.tenants.principal import ROLE_RANK, Principal
from app.tenants.security import hash_password, password_needs_rehash, password_problem, verify_password
from app.tenants.sessions import end_user_sessions


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
