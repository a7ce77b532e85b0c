"""``/api/v1/services``: health, credentials validated by the plugin, encrypted at rest, tenant-isolated."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.asgi import create_app
from app.config import Settings
from app.plugins.crypto import CredentialsUnavailable
from app.plugins.smtp import SmtpCredentials
from app.plugins.webhook import WebhookCredentials
from app.servicehost.models import ServiceCredential
from app.servicehost.services import CredentialService
from app.tenants.models import Organization, Role
from tests.conftest import World, bearer
from tests.helpers import free_port

API = "/api/v1"
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
SMTP_PASSWORD = "s3cret-smtp-pass-Zq9"
HOOK_SECRET = "hook-secret-0123456789-abcdef"


class _Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    return AuthResult(
        success=isinstance(data, LoginPassword) and data == (b"mailer", SMTP_PASSWORD.encode()), handled=False
    )


@pytest.fixture
def smtp_port() -> Iterator[int]:
    port = free_port()
    controller = Controller(
        _Sink(), hostname="127.0.0.1", port=port, authenticator=_auth, auth_required=True, auth_require_tls=False
    )
    controller.start()
    yield port
    controller.stop()


@pytest.fixture
def hook_url() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def private_settings(settings: Settings) -> Settings:
    """Local test servers live on 127.0.0.1: allow private targets for these tests only."""
    return dataclasses.replace(settings, security=dataclasses.replace(settings.security, allow_private_targets=True))


@pytest.fixture
async def app(private_settings: Settings, engine: Any, redis: Redis) -> Litestar:
    return create_app(private_settings)


@pytest.fixture
async def strict_client(settings: Settings, engine: Any, redis: Redis) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """The application with the production default: private targets refused."""
    async with AsyncTestClient(app=create_app(settings)) as c:
        yield c


def smtp_body(smtp_port: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "host": "127.0.0.1", "port": smtp_port, "username": "mailer", "password": SMTP_PASSWORD,
        "security": "none", "from_address": "Ops <ops@voluble-test.example>",
    }
    body.update(overrides)
    return body


@dataclasses.dataclass
class Org:
    org: Organization
    admin: dict[str, str]
    user: dict[str, str]


async def make_org(world: World) -> Org:
    org = await world.org()
    admin = await world.token(await world.user(org, Role.ORG_ADMIN))
    user = await world.token(await world.user(org, Role.USER))
    return Org(org, bearer(admin), bearer(user))


async def services_of(client: AsyncTestClient[Litestar], headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = await client.get(f"{API}/services", headers=headers)
    assert response.status_code == 200, response.text
    return {s["name"]: s for s in response.json()["items"]}


async def test_list_and_detail(client: AsyncTestClient[Litestar], world: World) -> None:
    a = await make_org(world)
    response = await client.get(f"{API}/services", headers=a.user)
    assert response.status_code == 200
    page = response.json()
    assert page["total"] >= 3 and page["limit"] == 50 and page["offset"] == 0
    services = {s["name"]: s for s in page["items"]}
    assert services["smtp"] == {
        "name": "smtp", "title": "E-mail (SMTP)", "address_field": "email", "status": "available", "reason": None,
        "checked_at": services["smtp"]["checked_at"], "needs_credentials": True, "has_credentials": False,
        "default_rate_per_second": None, "rate_per_second": None,
    }
    assert services["log"]["needs_credentials"] is False and services["log"]["address_field"] is None
    assert services["webhook"]["needs_credentials"] is True

    detail = (await client.get(f"{API}/services/smtp", headers=a.user)).json()
    schema = detail["credentials_schema"]
    assert set(schema["required"]) == {"host", "port", "security", "from_address"}
    assert schema["properties"]["security"]["enum"] == ["none", "starttls", "tls"]
    assert schema["properties"]["password"]["anyOf"][0]["writeOnly"] is True
    assert (await client.get(f"{API}/services/log", headers=a.user)).json()["credentials_schema"] is None
    webhook = (await client.get(f"{API}/services/webhook", headers=a.user)).json()
    assert set(webhook["credentials_schema"]["required"]) == {"url", "secret"}

    assert (await client.get(f"{API}/services/nope", headers=a.user)).status_code == 404
    assert (await client.get(f"{API}/services?limit=1&offset=1", headers=a.user)).json()["items"][0]["name"] == (
        sorted(services)[1]
    )
    assert (await client.get(f"{API}/services")).status_code == 401


async def test_smtp_credentials_checked_by_the_plugin_and_encrypted(
    client: AsyncTestClient[Litestar], world: World, sessions: async_sessionmaker[AsyncSession], smtp_port: int
) -> None:
    a = await make_org(world)
    url = f"{API}/services/smtp/credentials"

    # malformed: 422 naming the field
    bad = await client.put(url, json=smtp_body(smtp_port, port="twenty-five"), headers=a.admin)
    assert bad.status_code == 422, bad.text
    assert bad.json()["errors"][0]["field"] == "port"
    missing = await client.put(url, json={k: v for k, v in smtp_body(smtp_port).items() if k != "host"},
                               headers=a.admin)
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "host"
    unknown = await client.put(url, json=smtp_body(smtp_port, colour="blue"), headers=a.admin)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "colour"
    security = await client.put(url, json=smtp_body(smtp_port, security="ssl3"), headers=a.admin)
    assert security.status_code == 422 and security.json()["errors"][0]["field"] == "security"
    not_object = await client.put(url, json=["host"], headers=a.admin)
    assert 400 <= not_object.status_code < 500
    # well-formed, but the server refuses the login: the plugin's reason
    refused = await client.put(url, json=smtp_body(smtp_port, password="wrong"), headers=a.admin)
    assert refused.status_code == 422, refused.text
    assert "refused the username or password" in refused.json()["detail"]
    # unreachable server
    down = await client.put(url, json=smtp_body(free_port()), headers=a.admin)
    assert down.status_code == 422 and "Cannot connect" in down.json()["detail"]
    assert not (await services_of(client, a.admin))["smtp"]["has_credentials"]

    good = await client.put(url, json=smtp_body(smtp_port), headers=a.admin)
    assert good.status_code == 200, good.text
    assert good.json()["has_credentials"] is True
    assert SMTP_PASSWORD not in good.text and "mailer" not in good.text

    # never returned by the API
    for path in ("/services", "/services/smtp"):
        response = await client.get(API + path, headers=a.admin)
        assert SMTP_PASSWORD not in response.text and "ops@voluble-test.example" not in response.text
    assert (await services_of(client, a.user))["smtp"]["has_credentials"] is True

    # stored encrypted: neither the password nor any other value is in the row
    async with sessions() as session:
        row = (await session.scalars(select(ServiceCredential))).one()
        assert row.organization_id == a.org.id and row.service == "smtp"
        for plain in (SMTP_PASSWORD, "mailer", "127.0.0.1", "ops@voluble-test.example"):
            assert plain not in row.ciphertext
    # ...and decrypts for the worker
    settings = client.app.state.settings
    async with sessions() as session:
        creds = await CredentialService(session=session, organization_id=a.org.id, settings=settings).get_decrypted(
            "smtp"
        )
    assert isinstance(creds, SmtpCredentials)
    assert creds.password == SMTP_PASSWORD and creds.port == smtp_port and creds.username == "mailer"

    # replacing keeps one row
    again = await client.put(url, json=smtp_body(smtp_port, from_address="news@acme.example"), headers=a.admin)
    assert again.status_code == 200
    async with sessions() as session:
        assert len((await session.scalars(select(ServiceCredential))).all()) == 1


async def test_only_org_admins_change_credentials(
    client: AsyncTestClient[Litestar], world: World, hook_url: str
) -> None:
    a = await make_org(world)
    body = {"url": hook_url, "secret": HOOK_SECRET}
    url = f"{API}/services/webhook/credentials"
    assert (await client.put(url, json=body, headers=a.user)).status_code == 403
    assert (await client.delete(url, headers=a.user)).status_code == 403
    narrow = bearer(await world.token(await world.user(a.org, Role.ORG_ADMIN), ["servicechains:read"]))
    assert (await client.put(url, json=body, headers=narrow)).status_code == 403
    no_read = bearer(await world.token(await world.user(a.org, Role.USER), ["contacts:read"]))
    assert (await client.get(f"{API}/services", headers=no_read)).status_code == 403

    client_id, secret = await world.api_client(a.org, ["users:admin", "servicechains:read"])
    token = await client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    as_client = bearer(token.json()["access_token"])
    assert (await client.put(url, json=body, headers=as_client)).status_code == 200
    assert (await services_of(client, a.user))["webhook"]["has_credentials"] is True

    # a sysadmin belongs to no organization: it sees health, has no credentials
    sysadmin = bearer(await world.token(await world.user(None, Role.SYSADMIN)))
    assert (await services_of(client, sysadmin))["webhook"]["has_credentials"] is False
    assert (await client.put(url, json=body, headers=sysadmin)).status_code == 403  # as on the pages (0018)


async def test_needs_no_credentials_and_unknown_service(client: AsyncTestClient[Litestar], world: World) -> None:
    a = await make_org(world)
    log = await client.put(f"{API}/services/log/credentials", json={}, headers=a.admin)
    assert log.status_code == 422 and "needs no credentials" in log.json()["detail"]
    assert (await client.put(f"{API}/services/nope/credentials", json={}, headers=a.admin)).status_code == 404
    assert (await client.delete(f"{API}/services/nope/credentials", headers=a.admin)).status_code == 404
    assert (await client.delete(f"{API}/services/smtp/credentials", headers=a.admin)).status_code == 404


async def test_credentials_are_per_organization(
    client: AsyncTestClient[Litestar], world: World, sessions: async_sessionmaker[AsyncSession], hook_url: str
) -> None:
    a, b = await make_org(world), await make_org(world)
    url = f"{API}/services/webhook/credentials"
    assert (await client.put(url, json={"url": hook_url, "secret": HOOK_SECRET}, headers=a.admin)).status_code == 200

    assert (await services_of(client, a.user))["webhook"]["has_credentials"] is True
    assert (await services_of(client, b.admin))["webhook"]["has_credentials"] is False
    assert (await client.get(f"{API}/services/webhook", headers=b.user)).json()["has_credentials"] is False
    # B's delete does not touch A's credentials
    assert (await client.delete(url, headers=b.admin)).status_code == 404
    assert (await services_of(client, a.user))["webhook"]["has_credentials"] is True

    settings = client.app.state.settings
    async with sessions() as session:
        assert await CredentialService(session=session, organization_id=b.org.id, settings=settings).get_decrypted(
            "webhook"
        ) is None
        mine = await CredentialService(session=session, organization_id=a.org.id, settings=settings).get_decrypted(
            "webhook"
        )
        assert isinstance(mine, WebhookCredentials) and mine.secret == HOOK_SECRET

    # B saves its own; then A's ciphertext copied into B's row does not decrypt as B's credentials
    b_body = {"url": hook_url + "/b", "secret": "b" * 20}
    assert (await client.put(url, json=b_body, headers=b.admin)).status_code == 200
    async with sessions() as session:
        rows = {r.organization_id: r for r in await session.scalars(select(ServiceCredential))}
        await session.execute(
            update(ServiceCredential).where(ServiceCredential.id == rows[b.org.id].id)
            .values(ciphertext=rows[a.org.id].ciphertext)
        )
        await session.commit()
    async with sessions() as session:
        with pytest.raises(CredentialsUnavailable, match="belong to another owner"):
            await CredentialService(session=session, organization_id=b.org.id, settings=settings).get_decrypted(
                "webhook"
            )

    # A deletes its own
    assert (await client.delete(url, headers=a.admin)).status_code == 204
    assert (await services_of(client, a.user))["webhook"]["has_credentials"] is False
    assert (await client.delete(url, headers=a.admin)).status_code == 404
    async with sessions() as session:
        left = (await session.scalars(select(ServiceCredential))).all()
        assert [r.organization_id for r in left] == [b.org.id]


async def test_private_targets_refused_by_default(
    strict_client: AsyncTestClient[Litestar], world: World, smtp_port: int, hook_url: str
) -> None:
    a = await make_org(world)
    hook = await strict_client.put(
        f"{API}/services/webhook/credentials", json={"url": hook_url, "secret": HOOK_SECRET}, headers=a.admin
    )
    assert hook.status_code == 422 and "private, loopback or link-local" in hook.json()["detail"]
    local = await strict_client.put(
        f"{API}/services/webhook/credentials",
        json={"url": "http://localhost:8000/x", "secret": HOOK_SECRET},
        headers=a.admin,
    )
    assert local.status_code == 422
    smtp = await strict_client.put(f"{API}/services/smtp/credentials", json=smtp_body(smtp_port), headers=a.admin)
    assert smtp.status_code == 422 and "private, loopback or link-local" in smtp.json()["detail"]
    short = await strict_client.put(
        f"{API}/services/webhook/credentials", json={"url": "https://example.com/x", "secret": "short"},
        headers=a.admin,
    )
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "secret"
