"""Account flows shared by the pages and the API: throttled login, password-reset requests, invitations."""

from __future__ import annotations

import uuid

from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.queues import PASSWORD_RESET_OPTIONS
from app.tenants.models import Organization, Role, User
from app.tenants.ratelimit import RateLimit
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
    if user is None:
        await throttle.failed(email, ip)
        raise LoginRefused("Wrong email or password.")
    await throttle.succeeded(email)
    if user.role != Role.SYSADMIN:
        org = await accounts.repository.session.get(Organization, user.organization_id)
        if org is None or org.suspended:
            raise OrganizationSuspended("Your organization is suspended. Contact your administrator.")
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
