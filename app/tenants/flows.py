"""Account flows shared by the pages and the API: throttled login, password-reset requests, invitations,
changing one's own password, and the counts of the home page."""

from __future__ import annotations

import uuid
from typing import Any

from saq import Queue
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit.services import Actor, anonymous, record
from app.errors import FieldErrors
from app.queues import PASSWORD_RESET_OPTIONS
from app.tenants.models import AccessToken, ApiClient, Organization, Role, TokenKind, User
from app.tenants.principal import Principal
from app.tenants.ratelimit import RateLimit
from app.tenants.security import password_problem, verify_password
from app.tenants.services import AccountService
from app.tenants.throttle import LoginThrottle


class LoginRefused(Exception):
    """Wrong email or password (one message for both, so accounts cannot be probed)."""


class LoginThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed logins. Try again in {retry_after} seconds.")
        self.retry_after = retry_after


class OrganizationSuspended(Exception):
    """The user's organization is suspended."""


async def login(accounts: AccountService, throttle: LoginThrottle, email: str, password: str, ip: str) -> User:
    wait = await throttle.retry_after(email, ip)
    if wait is not None:
        raise LoginThrottled(wait)
    user = await accounts.authenticate(email, password)
    session = accounts.repository.session
    if user is None:
        await throttle.failed(email, ip)
        # the attempt is kept although the page answers 400 (which rolls the request back); never the password
        record(session, "auth.login_failed", "user", None, "email", actor=anonymous(email.strip().lower()), ip=ip)
        await session.commit()
        raise LoginRefused("Wrong email or password.")
    await throttle.succeeded(email)
    actor = Actor("user", user.id, user.name, user.organization_id)
    if user.role != Role.SYSADMIN:
        org = await session.get(Organization, user.organization_id)
        if org is None or org.suspended:
            record(session, "auth.login_failed", "user", user.id, "organization suspended", actor=actor, ip=ip)
            await session.commit()
            raise OrganizationSuspended("Your organization is suspended. Contact your administrator.")
    record(session, "auth.login", "user", user.id, actor=actor, ip=ip)
    return user


class ResetThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        minutes = max(1, -(-retry_after // 60))
        super().__init__(
            f"Too many reset requests for this address or from your network. Try again in {minutes} minutes."
        )
        self.retry_after = retry_after


async def request_password_reset(
    accounts: AccountService,
    queue: Queue,
    email: str,
    *,
    limit: RateLimit | None = None,
    ip: str = "",
) -> None:
    """Queue the reset mail for ``email``; say nothing about whether the account exists.

    The job decides (it looks the address up and mails only an active account), so a request costs
    the same Redis round trips for a known and an unknown address and the database is not read
    here: timing tells nothing. ``accounts`` is not consulted for the same reason. With ``limit``,
    requests are counted per address and per ``ip`` first (:class:`ResetThrottled` past the limit).
    """
    email = email.strip().lower()
    if limit is not None:
        wait = await limit.hit(address=email, ip=ip or "unknown")
        if wait is not None:
            raise ResetThrottled(wait)
    await _enqueue_reset(queue, email=email)


async def invite_new_user(db_session: AsyncSession, queue: Queue, user: User) -> None:
    """A user created without a password is mailed a link to choose one (valid for days, not an hour).

    Committed first, so the worker finds the account however soon it runs."""
    if user.password_hash is not None:
        return
    await db_session.commit()
    await _enqueue_reset(queue, user_id=str(user.id), invite=True)


async def _enqueue_reset(queue: Queue, **kwargs: object) -> None:
    request_id = uuid.uuid4().hex
    await queue.enqueue(
        "send_password_reset",
        request_id=request_id,
        key=f"password-reset:{request_id}",
        **kwargs,
        **PASSWORD_RESET_OPTIONS,
    )


# ---------------------------------------------------------------- one's own password and home page


class PasswordChangeThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many wrong passwords. Try again in {retry_after} seconds.")
        self.retry_after = retry_after


class WrongPassword(Exception):
    """The current password given is not the user's."""


def new_password_problems(new: str, confirm: str) -> dict[str, str]:
    """What is wrong with a new password and its confirmation (field -> message; empty: nothing)."""
    problem = password_problem(new)
    if problem:
        return {"new_password": problem}
    if new != confirm:
        return {"confirm_password": "The two passwords do not match."}
    return {}


async def change_password(
    accounts: AccountService, throttle: LoginThrottle, user_id: uuid.UUID, current: str, new: str, confirm: str, ip: str
) -> User:
    """The signed-in user changes their password: the current one is checked (throttled like a login),
    then the new one (:class:`FieldErrors`). Every session of the user ends; the caller starts a new one."""
    user: User = await accounts.get(user_id)
    wait = await throttle.retry_after(user.email, ip)
    if wait is not None:
        raise PasswordChangeThrottled(wait)
    if not verify_password(user.password_hash, current):
        await throttle.failed(user.email, ip)
        raise WrongPassword("This is not your current password.")
    problems = new_password_problems(new, confirm)
    if not problems and new == current:
        problems["new_password"] = "Choose a password different from the current one."
    if problems:
        raise FieldErrors(problems)
    return await accounts.set_password(user, new)


async def home_counts(session: AsyncSession, principal: Principal) -> tuple[Organization | None, dict[str, int]]:
    """The dashboard: the caller's organization and what it counts (organizations for a sysadmin; users
    and live API clients for an org admin; live personal tokens for everyone)."""
    org = await session.get(Organization, principal.organization_id) if principal.organization_id else None
    statements: dict[str, Select[Any]] = {}
    if principal.is_sysadmin:
        statements["organizations"] = select(func.count()).select_from(Organization)
        statements["suspended"] = select(func.count()).select_from(Organization).where(Organization.suspended.is_(True))
    elif org is not None and principal.is_org_admin:
        statements["users"] = select(func.count()).select_from(User).where(User.organization_id == org.id)
        statements["clients"] = (
            select(func.count())
            .select_from(ApiClient)
            .where(ApiClient.organization_id == org.id, ApiClient.revoked_at.is_(None))
        )
    statements["tokens"] = (
        select(func.count())
        .select_from(AccessToken)
        .where(
            AccessToken.user_id == principal.id,
            AccessToken.kind == TokenKind.PERSONAL,
            AccessToken.revoked_at.is_(None),
        )
    )
    return org, {name: int((await session.execute(s)).scalar_one()) for name, s in statements.items()}
