"""The ``smtp`` service: e-mail through the organization's own SMTP server (aiosmtplib).

Security ``none`` (plain), ``starttls`` (upgrade on the submission port, 587) or ``tls`` (implicit
TLS, 465); certificates are verified against the system's trust store. The connection goes only to
the address that was checked against private/loopback targets (see ``app.plugins.transport``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Annotated, Any, ClassVar, Literal

import aiosmtplib
import msgspec

from app.plugins.base import (
    CredentialsError,
    Inbound,
    OutgoingMessage,
    PluginContext,
    PluginInfo,
    Receipt,
    SelfTestError,
    SendError,
    SignatureError,
    WebhookRequest,
)
from app.plugins.transport import open_checked_socket

#: seconds the credentials check may take (connect, TLS, login)
VALIDATE_TIMEOUT = 15.0
MAX_SUBJECT = 250


class SmtpCredentials(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253, description="SMTP server host name.")]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535, description="Usually 587 (starttls), 465 (tls) or 25.")]
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=320)] | None = None
    password: (
        Annotated[
            str,
            msgspec.Meta(max_length=1024, extra_json_schema={"writeOnly": True, "format": "password"}),
        ]
        | None
    ) = None
    security: Literal["none", "starttls", "tls"]
    from_address: Annotated[
        str,
        msgspec.Meta(min_length=3, max_length=320, description="Sender, e.g. `Acme <noreply@acme.example>`."),
    ]

    def __repr__(self) -> str:
        return f"SmtpCredentials(host={self.host!r}, port={self.port}, username={self.username!r}, password=***)"


def _clean_header(value: str, limit: int = MAX_SUBJECT) -> str:
    return " ".join(value.split())[:limit]


def _mailbox(value: str) -> str | None:
    """The address of ``value`` (``a@b`` or ``Name <a@b>``) if it is a sane single mailbox."""
    if any(c in value for c in "\r\n\0"):
        return None
    _, addr = parseaddr(value)
    local, _, domain = addr.rpartition("@")
    if not local or not domain or "." not in domain.strip(".") or " " in addr:
        return None
    return addr


def _reason(exc: BaseException, creds: SmtpCredentials) -> str:
    where = f"{creds.host}:{creds.port}"
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return f"The SMTP server refused the username or password ({exc.code} {exc.message})."
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        return f"The SMTP server refused the recipient ({refused})."
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return f"The SMTP server refused the sender {exc.sender} ({exc.code} {exc.message})."
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError | aiosmtplib.SMTPTimeoutError | TimeoutError):
        return f"The SMTP server {where} did not answer in time."
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return f"The SMTP server {where} closed the connection unexpectedly."
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"The SMTP server {where} answered {exc.code} {exc.message}."
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS with {where} failed: certificate verify failed ({exc.verify_message})."
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {where} failed: {exc.reason or exc}."
    if isinstance(exc, aiosmtplib.SMTPException):
        return f"SMTP error with {where}: {exc}"
    if isinstance(exc, OSError):
        return f"Cannot connect to the SMTP server {where}: {exc.strerror or exc}"
    return f"SMTP error with {where}: {type(exc).__name__}: {exc}"


class SmtpPlugin:
    info: ClassVar[PluginInfo] = PluginInfo(
        name="smtp",
        title="E-mail (SMTP)",
        address_field="email",
        credentials_type=SmtpCredentials,
        description="Sends e-mail through your SMTP server (plain, STARTTLS or TLS; optional login).",
    )

    def __init__(self, context: PluginContext) -> None:
        self.context = context
        self.local_hostname = "localhost"

    async def self_test(self) -> None:
        try:
            ssl.create_default_context()
        except ssl.SSLError as exc:
            raise SelfTestError(f"No usable TLS configuration: {exc}") from exc
        # The name we greet servers with (EHLO); resolved once, off the event loop.
        fqdn = await asyncio.to_thread(socket.getfqdn)
        if fqdn and "." in fqdn and all(c.isalnum() or c in ".-" for c in fqdn):
            self.local_hostname = fqdn

    async def _connect(self, creds: SmtpCredentials, io_timeout: float) -> aiosmtplib.SMTP:
        sock = await open_checked_socket(creds.host, creds.port, self.context.allow_private_targets, io_timeout)
        try:
            client = aiosmtplib.SMTP(
                hostname=creds.host,
                sock=sock,
                local_hostname=self.local_hostname,
                use_tls=creds.security == "tls",
                start_tls=creds.security == "starttls",
                validate_certs=True,
                timeout=io_timeout,
            )
            await client.connect()
        except BaseException:
            sock.close()
            raise
        if creds.username:
            try:
                await client.login(creds.username, creds.password or "")
            except BaseException:
                client.close()
                raise
        return client

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            client.close()

    async def validate_credentials(self, credentials: Any) -> None:
        if not isinstance(credentials, SmtpCredentials):
            raise CredentialsError("SMTP credentials expected.")
        if _mailbox(credentials.from_address) is None:
            raise CredentialsError(f"{credentials.from_address!r} is not a valid sender address.")
        if credentials.password and not credentials.username:
            raise CredentialsError("A password was given without a username.")
        try:
            async with asyncio.timeout(VALIDATE_TIMEOUT):
                client = await self._connect(credentials, VALIDATE_TIMEOUT)
                await self._quit(client)
        except CredentialsError:
            raise
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise CredentialsError(_reason(exc, credentials)) from exc

    def build_message(self, message: OutgoingMessage, address: str, creds: SmtpCredentials) -> EmailMessage:
        sender = _mailbox(creds.from_address)
        domain = sender.rpartition("@")[2] if sender else "localhost"
        mail = EmailMessage()
        mail["From"] = creds.from_address
        mail["To"] = address
        mail["Subject"] = _clean_header(message.subject or "Message")
        mail["Date"] = format_datetime(datetime.now(UTC))
        mail["Message-ID"] = make_msgid(domain=domain)
        mail["X-Voluble-Message-Id"] = str(message.id)
        if message.reply_to_provider_id and _clean_header(message.reply_to_provider_id, 998).startswith("<"):
            ref = _clean_header(message.reply_to_provider_id, 998)
            mail["In-Reply-To"] = ref
            mail["References"] = ref
        mail.set_content(message.content)
        return mail

    async def send(self, message: OutgoingMessage, address: str | None, credentials: Any) -> str:
        if not isinstance(credentials, SmtpCredentials):
            raise SendError("The organization has no SMTP credentials.")
        if not address or _mailbox(address) is None:
            raise SendError(f"{address!r} is not a valid e-mail address.")
        try:
            mail = self.build_message(message, address, credentials)
        except (ValueError, TypeError) as exc:
            raise SendError(f"Cannot build the e-mail: {exc}") from exc
        timeout = self.context.send_timeout
        try:
            async with asyncio.timeout(timeout):
                client = await self._connect(credentials, timeout)
                try:
                    await client.send_message(mail)
                finally:
                    await self._quit(client)
        except CredentialsError as exc:
            raise SendError(str(exc)) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SendError(_reason(exc, credentials)) from exc
        return str(mail["Message-ID"])

    async def parse_webhook(self, request: WebhookRequest, credentials: Any) -> list[Receipt | Inbound]:
        raise SignatureError("The SMTP service receives no callbacks.")
