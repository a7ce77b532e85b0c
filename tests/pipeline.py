"""Fixtures for tests of the whole send pipeline: the app in-process, real SAQ workers as separate
processes, a real SMTP server, a local HTTP server for webhooks."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from litestar.testing import AsyncTestClient

from app.config import Settings
from app.tenants.models import Role
from tests.conftest import World, bearer
from tests.helpers import free_port, start_worker, stop_process

FINAL = {"MSG_SENT", "MSG_FAILED", "MSG_DELIVERED_SERVICE", "MSG_DELIVERED_USER", "MSG_READ", "MSG_REPLIED"}


def fast_settings(settings: Settings) -> Settings:
    """Settings for pipeline tests: own queues, local targets allowed, quick sweeps and timeouts."""
    return dataclasses.replace(
        settings,
        redis=dataclasses.replace(settings.redis, queue_prefix=f"t{uuid.uuid4().hex[:10]}"),
        security=dataclasses.replace(settings.security, allow_private_targets=True),
        worker=dataclasses.replace(
            settings.worker, send_timeout=3.0, sweep_seconds=1, stale_seconds=3, heartbeat_seconds=2
        ),
    )


class Inbox:
    """An aiosmtpd handler: accepts mail, or refuses every recipient with 550."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.refuse = False

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


class HookServer:
    """A local HTTP server recording POSTs; answers ``status`` after ``delay`` seconds."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.delay = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if outer.delay:
                    import time

                    time.sleep(outer.delay)
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"id": "hook-' + str(len(outer.requests)).encode() + b'"}')

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_server() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.close()


@pytest.fixture
def worker(settings: Settings) -> Iterator[Any]:
    proc = start_worker(settings)
    yield proc
    stop_process(proc)


@dataclasses.dataclass
class Tenant:
    org_id: str
    admin: dict[str, str]
    user: dict[str, str]


async def tenant(world: World, **org_fields: Any) -> Tenant:
    org = await world.org(**org_fields)
    admin = await world.user(org, Role.ORG_ADMIN)
    user = await world.user(org, Role.USER)
    return Tenant(str(org.id), bearer(await world.token(admin)), bearer(await world.token(user)))


async def setup_chain(client: AsyncTestClient[Any], t: Tenant, services: list[str], name: str = "chain") -> str:
    r = await client.post("/api/v1/servicechains", json={"name": name, "services": services}, headers=t.admin)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def smtp_credentials(client: AsyncTestClient[Any], t: Tenant, port: int) -> None:
    creds = {"host": "127.0.0.1", "port": port, "security": "none", "from_address": "noreply@example.com"}
    r = await client.put("/api/v1/services/smtp/credentials", json=creds, headers=t.admin)
    assert r.status_code in (200, 204), r.text


async def new_contact(client: AsyncTestClient[Any], t: Tenant, **fields: Any) -> str:
    body = {"first_name": "Steve", "surname": "Jones", "email": "steve@example.com", **fields}
    r = await client.post("/api/v1/contacts", json=body, headers=t.user)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def send(client: AsyncTestClient[Any], t: Tenant, contact_id: str, chain_id: str, content: str) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/messages",
        json={"contact_id": contact_id, "servicechain_id": chain_id, "content": content},
        headers=t.user,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def wait_final(client: AsyncTestClient[Any], t: Tenant, message_id: str, timeout: float = 45) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    body: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        r = await client.get(f"/api/v1/messages/{message_id}", headers=t.user)
        body = r.json()
        if body["state"] in FINAL:
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"message not final after {timeout}s: {body}")


async def wait_all_final(
    client: AsyncTestClient[Any], t: Tenant, ids: list[str], timeout: float = 90
) -> list[dict[str, Any]]:
    return [await wait_final(client, t, i, timeout) for i in ids]
