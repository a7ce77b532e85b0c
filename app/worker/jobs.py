"""Job functions. Each is a plain ``async def job(ctx, *, ...)``; options are set where it is enqueued."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from app.logging import get_logger
from app.mail import send_mail
from app.tenants.services import AccountService, PasswordResetService

log = get_logger(__name__)

# Enqueue options of each job: SAQ's ``retries`` counts total attempts.
PASSWORD_RESET_OPTIONS: dict[str, Any] = {"timeout": 60, "retries": 5, "retry_delay": 2.0, "retry_backoff": True}


async def send_password_reset(ctx: dict[str, Any], *, user_id: str, request_id: str) -> str:
    """Issue a single-use reset token for the user and mail them the link.

    The raw token never passes through Redis: the job mints it when it runs. ``request_id`` makes a
    re-run (a retry, or SAQ's sweep re-queuing a job it caught mid-start) mail at most once.
    """
    settings = ctx["settings"]
    async with ctx["sessions"]() as session:
        user = await AccountService(session=session).get_one_or_none(id=UUID(user_id))
        if user is None or not user.is_active:
            return "skipped"
        resets = PasswordResetService(session=session)
        raw = await resets.issue(user, settings.security.reset_token_ttl_seconds, request_id)
        await session.commit()
    if raw is None:
        return "already-sent"
    link = f"{settings.server.public_url}/reset-password/{raw}"
    minutes = settings.security.reset_token_ttl_seconds // 60
    body = (
        f"Hello {user.name},\n\n"
        f"Someone asked to reset the password of your Voluble account ({user.email}).\n"
        f"Choose a new password here (the link works once, for {minutes} minutes):\n\n{link}\n\n"
        "If this was not you, ignore this mail; your password stays as it is.\n"
    )
    await send_mail(settings.mail, user.email, "Reset your Voluble password", body)
    async with ctx["sessions"]() as session:
        await PasswordResetService(session=session).mark_mailed(request_id)
        await session.commit()
    return "sent"


FUNCTIONS = [send_password_reset]
