"""The built-in plugins against real servers: aiosmtpd for ``smtp``, a local HTTP server for ``webhook``.

No plugin code is patched: each test talks to a server that speaks the protocol on 127.0.0.1, with
``allow_private_targets`` on, and the network guard is shown refusing the same targets when it is off.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import ipaddress
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.plugins.base import (
    ContactInfo,
    CredentialsError,
    OutgoingMessage,
    PluginContext,
    SendError,
    SignatureError,
    WebhookRequest,
)
from app.plugins.log import LogPlugin
from app.plugins.smtp import SmtpCredentials, SmtpPlugin
from app.plugins.webhook import WebhookCredentials, WebhookPlugin
from tests.helpers import free_port

SECRET = "a-webhook-secret-of-some-length"


def context(tmp_path: Path, *, allow_private: bool = True, send_timeout: float = 5.0) -> PluginContext:
    return PluginContext(var_dir=tmp_path, allow_private_targets=allow_private, send_timeout=send_timeout)


def outgoing(content: str = "Hi Steve", subject: str = "Hello", email_address: str | None = None) -> OutgoingMessage:
    contact = ContactInfo(
        id=uuid.uuid4(), first_name="Steve", surname="Jobs", email=email_address or "steve@example.com",
        phone="+15551234567",
    )
    return OutgoingMessage(id=uuid.uuid4(), organization_id=uuid.uuid4(), content=content, contact=contact,
                           subject=subject)


# -- log ---------------------------------------------------------------------------------------


async def test_log_appends_one_json_line_per_message(tmp_path: Path) -> None:
    plugin = LogPlugin(context(tmp_path))
    await plugin.self_test()
    await plugin.validate_credentials(None)
    messages = [outgoing(f"message {i}") for i in range(50)]
    ids = await asyncio.gather(*(plugin.send(m, None, None) for m in messages))

    lines = (tmp_path / "outbox.jsonl").read_text().splitlines()
    assert len(lines) == 50
    records = [json.loads(line) for line in lines]
    assert {r["provider_message_id"] for r in records} == set(ids)
    assert len(set(ids)) == 50 and all(uuid.UUID(i) for i in ids)
    by_message = {r["message_id"]: r for r in records}
    first = by_message[str(messages[0].id)]
    assert first["content"] == "message 0"
    assert first["organization_id"] == str(messages[0].organization_id)
    assert first["contact"]["first_name"] == "Steve"
    with pytest.raises(SignatureError):
        await plugin.parse_webhook(WebhookRequest("POST", "/", {}, {}, b""), None)


async def test_log_self_test_fails_on_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    plugin = LogPlugin(context(blocker / "var"))
    with pytest.raises(Exception, match="Cannot create"):
        await plugin.self_test()
    with pytest.raises(SendError, match="Cannot write the outbox"):
        await plugin.send(outgoing(), None, None)


# -- smtp --------------------------------------------------------------------------------------


@dataclass
class Recorder:
    messages: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK queued"


class RejectRecipients(Recorder):
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return "550 5.1.1 No such user here"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"mailer", b"right password")
    return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    handler: Recorder
    port: int

    def creds(self, **overrides: Any) -> SmtpCredentials:
        values: dict[str, Any] = {
            "host": "127.0.0.1", "port": self.port, "security": "none", "from_address": "Acme <noreply@acme.example>",
        }
        values.update(overrides)
        return msgspec.convert(values, SmtpCredentials)


def _start(handler: Recorder, **kwargs: Any) -> Iterator[SmtpServer]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SmtpServer(handler, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    yield from _start(Recorder())


@pytest.fixture
def smtp_auth_server() -> Iterator[SmtpServer]:
    yield from _start(Recorder(), authenticator=_authenticator, auth_required=True, auth_require_tls=False)


@pytest.fixture
def smtp_rejecting_server() -> Iterator[SmtpServer]:
    yield from _start(RejectRecipients())


async def test_smtp_validates_and_sends_a_mail(tmp_path: Path, smtp_server: SmtpServer) -> None:
    plugin = SmtpPlugin(context(tmp_path))
    await plugin.self_test()
    creds = smtp_server.creds()
    await plugin.validate_credentials(creds)

    message = outgoing("Hi Steve,\nyour order shipped.", subject="Your order", email_address="steve@example.com")
    provider_id = await plugin.send(message, "steve@example.com", creds)

    assert len(smtp_server.handler.messages) == 1
    envelope = smtp_server.handler.messages[0]
    assert envelope.mail_from == "noreply@acme.example"
    assert envelope.rcpt_tos == ["steve@example.com"]
    mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert mail["Subject"] == "Your order"
    assert mail["Message-ID"] == provider_id and provider_id.endswith("@acme.example>")
    assert mail["X-Voluble-Message-Id"] == str(message.id)
    assert mail.get_content().replace("\r\n", "\n").strip() == "Hi Steve,\nyour order shipped."


async def test_smtp_flattens_header_injection_and_refuses_bad_addresses(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    plugin = SmtpPlugin(context(tmp_path))
    creds = smtp_server.creds()
    await plugin.send(outgoing(subject="Hello\r\nBcc: victim@example.com"), "steve@example.com", creds)
    mail = email.message_from_bytes(smtp_server.handler.messages[0].content, policy=email.policy.default)
    assert mail["Bcc"] is None and mail["Subject"] == "Hello Bcc: victim@example.com"
    for bad in ("steve@example.com\r\nBcc: victim@example.com", "not an address", "", None):
        with pytest.raises(SendError, match="not a valid e-mail address"):
            await plugin.send(outgoing(), bad, creds)
    assert len(smtp_server.handler.messages) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtp_login_with_right_and_wrong_password(tmp_path: Path, smtp_auth_server: SmtpServer) -> None:
    plugin = SmtpPlugin(context(tmp_path))
    good = smtp_auth_server.creds(username="mailer", password="right password")
    await plugin.validate_credentials(good)
    with pytest.raises(CredentialsError, match="refused the username or password"):
        await plugin.validate_credentials(smtp_auth_server.creds(username="mailer", password="wrong"))
    # no login at all: the server wants one, so the mail is refused at send time
    with pytest.raises(SendError, match="530"):
        await plugin.send(outgoing(), "steve@example.com", smtp_auth_server.creds())
    await plugin.send(outgoing(), "steve@example.com", good)
    assert len(smtp_auth_server.handler.messages) == 1


async def test_smtp_login_refused_when_server_offers_no_auth(tmp_path: Path, smtp_server: SmtpServer) -> None:
    plugin = SmtpPlugin(context(tmp_path))
    with pytest.raises(CredentialsError, match="AUTH"):
        await plugin.validate_credentials(smtp_server.creds(username="mailer", password="x"))
    with pytest.raises(CredentialsError, match="without a username"):
        await plugin.validate_credentials(smtp_server.creds(password="x"))
    with pytest.raises(CredentialsError, match="not a valid sender"):
        await plugin.validate_credentials(smtp_server.creds(from_address="nobody"))


async def test_smtp_rejected_recipient_is_a_send_error(tmp_path: Path, smtp_rejecting_server: SmtpServer) -> None:
    plugin = SmtpPlugin(context(tmp_path))
    with pytest.raises(SendError, match=r"refused the recipient.*550"):
        await plugin.send(outgoing(), "steve@example.com", smtp_rejecting_server.creds())


async def test_smtp_unreachable_server(tmp_path: Path) -> None:
    plugin = SmtpPlugin(context(tmp_path))
    creds = msgspec.convert(
        {"host": "127.0.0.1", "port": free_port(), "security": "none", "from_address": "a@acme.example"},
        SmtpCredentials,
    )
    with pytest.raises(CredentialsError, match="Cannot connect"):
        await plugin.validate_credentials(creds)
    with pytest.raises(SendError, match="Cannot connect"):
        await plugin.send(outgoing(), "steve@example.com", creds)


async def test_smtp_starttls_required_but_not_offered(tmp_path: Path, smtp_server: SmtpServer) -> None:
    plugin = SmtpPlugin(context(tmp_path))
    with pytest.raises(CredentialsError, match="STARTTLS"):
        await plugin.validate_credentials(smtp_server.creds(security="starttls"))


async def test_smtp_private_targets_refused_unless_allowed(tmp_path: Path, smtp_server: SmtpServer) -> None:
    plugin = SmtpPlugin(context(tmp_path, allow_private=False))
    for host in ("127.0.0.1", "localhost"):
        with pytest.raises(CredentialsError, match="private, loopback or link-local"):
            await plugin.validate_credentials(smtp_server.creds(host=host))
        with pytest.raises(SendError, match="private, loopback or link-local"):
            await plugin.send(outgoing(), "steve@example.com", smtp_server.creds(host=host))
    assert smtp_server.handler.messages == []
    assert "password=***" in repr(smtp_server.creds(username="u", password="hunter2-secret"))


# -- smtp over TLS, with a certificate of our own CA ---------------------------------------------


@dataclass
class Pki:
    ca_file: Path
    server_context: ssl.SSLContext


def _make_pki(directory: Path) -> Pki:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Voluble Test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    return Pki(ca_file, server_context)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return _make_pki(tmp_path)


@pytest.fixture
def smtp_starttls_server(pki: Pki) -> Iterator[SmtpServer]:
    yield from _start(
        Recorder(), tls_context=pki.server_context, require_starttls=True, authenticator=_authenticator,
        auth_required=True,
    )


@pytest.fixture
def smtp_tls_server(pki: Pki) -> Iterator[SmtpServer]:
    yield from _start(Recorder(), ssl_context=pki.server_context)


async def test_smtp_starttls_with_login(
    tmp_path: Path, pki: Pki, smtp_starttls_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = SmtpPlugin(context(tmp_path))
    creds = smtp_starttls_server.creds(security="starttls", username="mailer", password="right password")
    # the server's certificate is not trusted by the system: refused
    with pytest.raises(CredentialsError, match="certificate verify failed"):
        await plugin.validate_credentials(creds)
    # once its CA is trusted, STARTTLS + AUTH work (AUTH is only offered after STARTTLS here)
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    await plugin.validate_credentials(creds)
    await plugin.send(outgoing("over TLS"), "steve@example.com", creds)
    assert len(smtp_starttls_server.handler.messages) == 1
    # plain text to a server that requires STARTTLS is refused at send time
    with pytest.raises(SendError):
        await plugin.send(outgoing(), "steve@example.com", smtp_starttls_server.creds())


async def test_smtp_implicit_tls(
    tmp_path: Path, pki: Pki, smtp_tls_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = SmtpPlugin(context(tmp_path))
    creds = smtp_tls_server.creds(security="tls")
    with pytest.raises(CredentialsError, match="certificate verify failed"):
        await plugin.validate_credentials(creds)
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    await plugin.validate_credentials(creds)
    provider_id = await plugin.send(outgoing("implicit TLS"), "steve@example.com", creds)
    assert provider_id.startswith("<")
    assert len(smtp_tls_server.handler.messages) == 1


# -- webhook -----------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class HookServer:
    """A local HTTP server that records each request and answers as configured."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.status = 200
        self.answer = b'{"id": "hook-123"}'
        self.delay = 0.0
        self.location: str | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                outer.requests.append(Received(self.path, dict(self.headers.items()), self.rfile.read(length)))
                if outer.delay:
                    time.sleep(outer.delay)
                self.send_response(outer.status)
                if outer.location:
                    self.send_header("Location", outer.location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(outer.answer)))
                self.end_headers()
                self.wfile.write(outer.answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = "/hooks/voluble", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def creds(self, **overrides: Any) -> WebhookCredentials:
        return msgspec.convert({"url": self.url(), "secret": SECRET, **overrides}, WebhookCredentials)


@pytest.fixture
def hook_server() -> Iterator[HookServer]:
    server = HookServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


async def test_webhook_posts_signed_json(tmp_path: Path, hook_server: HookServer) -> None:
    plugin = WebhookPlugin(context(tmp_path))
    await plugin.self_test()
    creds = hook_server.creds()
    await plugin.validate_credentials(creds)
    message = outgoing("Hi Steve")

    provider_id = await plugin.send(message, None, creds)

    assert provider_id == "hook-123"
    [request] = hook_server.requests
    assert request.path == "/hooks/voluble"
    signature = request.headers["X-Voluble-Signature"]
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    wrong = "sha256=" + hmac.new(b"another secret", request.body, hashlib.sha256).hexdigest()
    assert signature != wrong
    payload = json.loads(request.body)
    assert payload["message"]["id"] == str(message.id)
    assert payload["message"]["content"] == "Hi Steve"
    assert payload["message"]["organization_id"] == str(message.organization_id)
    assert payload["contact"]["id"] == str(message.contact.id)
    assert payload["contact"]["first_name"] == "Steve"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Voluble-Message-Id"] == str(message.id)


async def test_webhook_provider_id_generated_without_json_id(tmp_path: Path, hook_server: HookServer) -> None:
    plugin = WebhookPlugin(context(tmp_path))
    hook_server.answer = b"thanks"
    hook_server.status = 202
    provider_id = await plugin.send(outgoing(), None, hook_server.creds())
    assert uuid.UUID(provider_id)


@pytest.mark.parametrize(("status", "location"), [(500, None), (404, None), (302, "http://127.0.0.1:1/elsewhere")])
async def test_webhook_non_2xx_is_a_send_error(
    tmp_path: Path, hook_server: HookServer, status: int, location: str | None
) -> None:
    plugin = WebhookPlugin(context(tmp_path))
    hook_server.status, hook_server.location = status, location
    with pytest.raises(SendError, match=f"HTTP {status}"):
        await plugin.send(outgoing(), None, hook_server.creds())
    assert len(hook_server.requests) == 1  # a redirect is not followed


async def test_webhook_timeout_is_a_send_error(tmp_path: Path, hook_server: HookServer) -> None:
    plugin = WebhookPlugin(context(tmp_path, send_timeout=0.5))
    hook_server.delay = 2.0
    started = time.monotonic()
    with pytest.raises(SendError, match="did not answer"):
        await plugin.send(outgoing(), None, hook_server.creds())
    assert time.monotonic() - started < 1.9


async def test_webhook_unreachable_is_a_send_error(tmp_path: Path) -> None:
    plugin = WebhookPlugin(context(tmp_path))
    creds = msgspec.convert({"url": f"http://127.0.0.1:{free_port()}/x", "secret": SECRET}, WebhookCredentials)
    with pytest.raises(SendError, match="Cannot reach the webhook"):
        await plugin.send(outgoing(), None, creds)


async def test_webhook_url_checks(tmp_path: Path, hook_server: HookServer) -> None:
    plugin = WebhookPlugin(context(tmp_path))
    for url, match in [
        ("ftp://example.com/hook", "http:// or https://"),
        ("not a url at all", "spaces"),
        ("/relative/path/only", "http:// or https://"),
        ("http://example.com:99999/", "not well-formed"),
    ]:
        with pytest.raises(CredentialsError, match=match):
            await plugin.validate_credentials(hook_server.creds(url=url))
    with pytest.raises(msgspec.ValidationError):
        hook_server.creds(secret="short")


async def test_webhook_private_targets_refused_unless_allowed(tmp_path: Path, hook_server: HookServer) -> None:
    plugin = WebhookPlugin(context(tmp_path, allow_private=False))
    for host in ("127.0.0.1", "localhost", "[::1]"):
        creds = hook_server.creds(url=hook_server.url(host=host))
        with pytest.raises(CredentialsError, match="private, loopback or link-local"):
            await plugin.validate_credentials(creds)
        with pytest.raises(SendError, match="private, loopback or link-local"):
            await plugin.send(outgoing(), None, creds)
    assert hook_server.requests == []
    with pytest.raises(SignatureError):
        await plugin.parse_webhook(WebhookRequest("POST", "/", {}, {}, b"{}"), hook_server.creds())
    assert "secret=***" in repr(hook_server.creds())
