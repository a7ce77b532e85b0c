"""Browser account flows shared by the pages: throttled login and password-reset requests."""

from __future__ import annotations

import uuid

from saq import Queue

from app.tenants.models import Organization, Role, User
from app.tenants.services import AccountService
from app.tenants.throttle import LoginThrottle
from app.worker.jobs import PASSWORD_RESET_OPTIONS


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


async def request_password_reset(accounts: AccountService, queue: Queue, email: str) -> None:
    """Queue the reset mail when the account exists; say nothing either way."""
    user = await accounts.get_by_email(email)
    if user is None or not user.is_active:
        return
    request_id = uuid.uuid4().hex
    await queue.enqueue(
        "send_password_reset",
        user_id=str(user.id),
        request_id=request_id,
        key=f"password-reset:{request_id}",
        **PASSWORD_RESET_OPTIONS,
    )
