"""A local webhook receiver and the steps the webhook tests share (tests/test_webhooks*.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.webhooks import delivery
from app.webhooks.models import DeliveryStatus, WebhookDelivery
from app.webhooks.services import WebhookSecrets
from tests.pipeline import Tenant


class Receiver:
    """A local HTTP endpoint: records every POST, answers the statuses of ``answers`` in turn (then 200)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = outer.answers.pop(0) if outer.answers else 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(f"answer {status} ".encode() * 200)  # longer than the 1 KiB kept

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def create_webhook(client: AsyncTestClient[Any], t: Tenant, url: str, **fields: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/webhooks", json={"url": url, **fields}, headers=t.admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def opt_out(client: AsyncTestClient[Any], t: Tenant, contact_id: str, out: bool = True) -> None:
    r = await client.post(f"/api/v1/contacts/{contact_id}/{'opt-out' if out else 'opt-in'}", headers=t.admin)
    assert r.status_code == 200, r.text


async def the_delivery(sessions: async_sessionmaker[AsyncSession], endpoint_id: str) -> WebhookDelivery:
    async with sessions() as session:
        rows = list(
            await session.scalars(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == UUID(endpoint_id)))
        )
    assert len(rows) == 1, rows
    return rows[0]


async def attempt_at(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, delivery_id: UUID, now: datetime
) -> Any:
    async with sessions() as session:
        return await delivery.attempt(session, WebhookSecrets(settings), delivery_id, allow_private=True, now=now)


async def fan_out_at(sessions: async_sessionmaker[AsyncSession], now: datetime) -> int:
    async with sessions() as session:
        return await delivery.fan_out(session, now)


async def wait_for(predicate: Any, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.1)


async def wait_for_status(sessions: async_sessionmaker[AsyncSession], endpoint_id: str, status: DeliveryStatus) -> None:
    for _ in range(100):
        if (await the_delivery(sessions, endpoint_id)).status == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"delivery not {status}")


async def due_at(sessions: async_sessionmaker[AsyncSession], now: datetime) -> list[tuple[UUID, datetime]]:
    async with sessions() as session:
        return await delivery.due(session, now)
