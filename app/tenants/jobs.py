"""The jobs of the account flows (app/tenants/flows.py enqueues them with ``app.queues`` options)."""

from __future__ import annotations

from uuid import UUID

from app.logging import get_logger
from app.mail import send_mail
from app.queues import JobContext
from app.tenants.services import AccountService, PasswordResetService

log = get_logger(__name__)


async def send_password_reset(
    ctx: JobContext,
    *,
    request_id: str,
    user_id: str | None = None,
    email: str | None = None,
    invite: bool = False,
) -> str:
    """Issue a single-use reset token for the user and mail them the link.

    The user is named by id or, for a forgot-password request, by the address typed: the request
    queues this job whether or not the address exists, and the job mails only an active account.
    ``invite`` mails a new user (created without a password) a longer-lived link to choose one.
    The raw token never passes through Redis: the job mints it when it runs. ``request_id`` makes a
    re-run (a retry, or SAQ's sweep re-queuing a job it caught mid-start) mail at most once.
    """
    settings = ctx["settings"]
    security = settings.security
    ttl = security.invite_token_ttl_seconds if invite else security.reset_token_ttl_seconds
    async with ctx["sessions"]() as session:
        accounts = AccountService(session=session)
        if user_id is not None:
            user = await accounts.get_one_or_none(id=UUID(user_id))
        else:
            user = await accounts.get_by_email(email or "")
        if user is None or not user.is_active:
            return "skipped"
        resets = PasswordResetService(session=session)
        raw = await resets.issue(user, ttl, request_id)
        await session.commit()
    if raw is None:
        return "already-sent"
    link = f"{settings.server.public_url}/reset-password/{raw}"
    if invite:
        days = max(1, ttl // 86400)
        subject = "You have a Voluble account"
        body = (
            f"Hello {user.name},\n\n"
            f"An account was created for you on Voluble ({user.email}).\n"
            f"Choose your password here (the link works once, for {days} days):\n\n{link}\n\n"
            "If you did not expect this, ignore this mail.\n"
        )
    else:
        minutes = ttl // 60
        subject = "Reset your Voluble password"
        body = (
            f"Hello {user.name},\n\n"
            f"Someone asked to reset the password of your Voluble account ({user.email}).\n"
            f"Choose a new password here (the link works once, for {minutes} minutes):\n\n{link}\n\n"
            "If this was not you, ignore this mail; your password stays as it is.\n"
        )
    await send_mail(settings.mail, user.email, subject, body)
    async with ctx["sessions"]() as session:
        await PasswordResetService(session=session).mark_mailed(request_id)
        await session.commit()
    return "sent"


#: registered with the ``default`` queue's worker (app/worker/runner.py)
FUNCTIONS = [send_password_reset]
