"""Outgoing system mail (password resets, invitations): written to the log, or sent over SMTP."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from app.config import MailSettings
from app.logging import get_logger

log = get_logger(__name__)


async def send_mail(settings: MailSettings, to: str, subject: str, body: str) -> None:
    if settings.backend == "log":
        # The embedded run has no mail server: the mail, link included, goes to the log for the operator.
        log.info("mail (log backend)", to=to, subject=subject, body=body)
        return
    if settings.backend != "smtp":
        raise ValueError(f"unknown mail backend {settings.backend!r}")
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    await aiosmtplib.send(
        message,
        hostname=settings.host,
        port=settings.port,
        username=settings.username or None,
        password=settings.password or None,
        use_tls=settings.security == "tls",
        start_tls=settings.security == "starttls",
        timeout=30,
    )
    log.info("mail sent", to=to, subject=subject)
