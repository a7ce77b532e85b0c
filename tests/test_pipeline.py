"""The whole send pipeline with real parts: app, SAQ workers (separate processes), Redis, SMTP, HTTP."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from app.config import Settings
from app.messaging.models import Message
from app.tenants.models import Organization
from tests.conftest import World
from tests.helpers import start_worker, stop_process
from tests.pipeline import (
    HookServer,
    Inbox,
    fast_settings,
    new_contact,
    send,
    setup_chain,
    smtp_credentials,
    tenant,
    wait_final,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


@pytest.fixture
def client_factory(settings: Settings, engine: Any, redis: Any) -> Any:
    """Builds the app when the test asks, after it installed extra plugins."""
    from app.asgi import create_app

    return lambda: AsyncTestClient(app=create_app(settings))


@pytest.mark.usefixtures("worker")
async def test_smtp_first_sends_the_rendered_mail(
    client: AsyncTestClient[Any], world: World, smtp_server: tuple[Inbox, int]
) -> None:
    inbox, port = smtp_server
    t = await tenant(world)
    await smtp_credentials(client, t, port)
    chain = await setup_chain(client, t, ["smtp", "log"])
    contact = await new_contact(client, t)
    sent = await send(client, t, contact, chain, "Hi {{ first_name }} {{ surname }}, your order shipped.")
    final = await wait_final(client, t, sent["id"])
    assert final["state"] == "MSG_SENT" and final["service"] == "smtp", final
    assert [(a["service"], a["outcome"]) for a in final["attempts"]] == [("smtp", "sent")]
    assert final["provider_message_id"] and final["sent_at"]
    assert len(inbox.messages) == 1
    mail = inbox.messages[0]
    assert mail["To"] == "steve@example.com"
    assert mail["Subject"].startswith("Message from Org ")
    assert mail.get_content().strip() == "Hi Steve Jones, your order shipped."


@pytest.mark.usefixtures("worker")
async def test_smtp_refusing_falls_back_to_log(
    client: AsyncTestClient[Any], world: World, smtp_server: tuple[Inbox, int], sessions: Any
) -> None:
    inbox, port = smtp_server
    t = await tenant(world, credits=5)
    await smtp_credentials(client, t, port)
    inbox.refuse = True
    chain = await setup_chain(client, t, ["smtp", "log"])
    contact = await new_contact(client, t)
    sent = await send(client, t, contact, chain, "Hello {{ first_name }}")
    final = await wait_final(client, t, sent["id"])
    assert final["state"] == "MSG_SENT" and final["service"] == "log", final
    attempts = [(a["service"], a["outcome"]) for a in final["attempts"]]
    assert attempts == [("smtp", "failed"), ("log", "sent")]
    assert "550" in (final["attempts"][0]["error"] or "")
    assert inbox.messages == []
    async with sessions() as session:  # one credit charged, however many services were tried
        org = await session.get(Organization, __import__("uuid").UUID(t.org_id))
        assert (org.credits, org.credits_reserved) == (4, 0)


@pytest.mark.usefixtures("worker")
async def test_only_failing_services_fail_the_message(
    client: AsyncTestClient[Any], world: World, smtp_server: tuple[Inbox, int], hook_server: HookServer
) -> None:
    inbox, port = smtp_server
    inbox.refuse = True
    hook_server.status = 500
    t = await tenant(world)
    await smtp_credentials(client, t, port)
    r = await client.put(
        "/api/v1/services/webhook/credentials",
        json={"url": hook_server.url, "secret": "s3cret-webhook-key-1"},
        headers=t.admin,
    )
    assert r.status_code in (200, 204), r.text
    chain = await setup_chain(client, t, ["smtp", "webhook"])
    contact = await new_contact(client, t)
    sent = await send(client, t, contact, chain, "Hello")
    final = await wait_final(client, t, sent["id"])
    assert final["state"] == "MSG_FAILED", final
    assert [(a["service"], a["outcome"]) for a in final["attempts"]] == [("smtp", "failed"), ("webhook", "failed")]
    assert all(a["error"] for a in final["attempts"])
    assert len(hook_server.requests) == 1


@pytest.mark.usefixtures("worker")
async def test_webhook_post_is_signed(client: AsyncTestClient[Any], world: World, hook_server: HookServer) -> None:
    t = await tenant(world)
    r = await client.put(
        "/api/v1/services/webhook/credentials",
        json={"url": hook_server.url, "secret": "s3cret-webhook-key-1"},
        headers=t.admin,
    )
    assert r.status_code in (200, 204), r.text
    chain = await setup_chain(client, t, ["webhook"])
    contact = await new_contact(client, t)
    sent = await send(client, t, contact, chain, "Ping {{ first_name }}")
    final = await wait_final(client, t, sent["id"])
    assert final["state"] == "MSG_SENT" and final["service"] == "webhook", final
    headers, body = hook_server.requests[0]
    expected = "sha256=" + hmac.new(b"s3cret-webhook-key-1", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-voluble-signature"], expected)
    assert b"Ping Steve" in body


@pytest.mark.usefixtures("worker")
async def test_services_without_credentials_or_address_are_skipped(
    client: AsyncTestClient[Any], world: World, smtp_server: tuple[Inbox, int], sessions: Any
) -> None:
    inbox, port = smtp_server
    a = await tenant(world)
    b = await tenant(world)
    await smtp_credentials(client, a, port)  # only A has SMTP credentials
    chain_b = await setup_chain(client, b, ["smtp", "log"])
    contact_b = await new_contact(client, b)
    final = await wait_final(client, b, (await send(client, b, contact_b, chain_b, "Hi"))["id"])
    assert final["service"] == "log"
    assert final["attempts"][0]["service"] == "smtp" and "no_credentials" in final["attempts"][0]["error"]
    assert inbox.messages == []  # A's SMTP server never saw B's message
    chain_a = await setup_chain(client, a, ["smtp", "log"])
    phone_only = await new_contact(client, a, email=None, phone="+442079460958")
    final = await wait_final(client, a, (await send(client, a, phone_only, chain_a, "Hi"))["id"])
    assert final["service"] == "log" and "no_address" in final["attempts"][0]["error"]
    async with sessions() as session:
        rows = list(await session.scalars(select(Message)))
        assert len(rows) == 2


async def test_blacklisted_plugin_is_skipped(
    client_factory: Any, world: World, settings: Settings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin installed through an entry point that fails its self-test never gets a message."""
    from tests.test_plugins_registry import install

    installed = next(install(tmp_path, monkeypatch, ["broken", "healing"]))
    worker = start_worker(settings, PYTHONPATH=str(installed.root))
    try:
        async with client_factory() as client:
            t = await tenant(world)
            listing = (await client.get("/api/v1/services", headers=t.user)).json()
            items = listing["items"] if isinstance(listing, dict) else listing
            services = {s["name"]: s for s in items}
            assert services["healing"]["status"] == "blacklisted" and services["healing"]["reason"]
            chain = await setup_chain(client, t, ["healing", "log"])
            contact = await new_contact(client, t)
            final = await wait_final(client, t, (await send(client, t, contact, chain, "hi"))["id"])
            assert final["state"] == "MSG_SENT" and final["service"] == "log", final
            first = final["attempts"][0]
            assert first["service"] == "healing" and first["outcome"] == "failed"
            assert first["error"].startswith("blacklisted") and "upstream configuration missing" in first["error"]
    finally:
        stop_process(worker)


@pytest.mark.usefixtures("worker")
async def test_scheduled_message_is_sent_when_due(client: AsyncTestClient[Any], world: World) -> None:
    from datetime import UTC, datetime, timedelta

    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t)
    send_at = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    r = await client.post(
        "/api/v1/messages",
        json={"contact_id": contact, "servicechain_id": chain, "content": "later", "send_at": send_at},
        headers=t.user,
    )
    assert r.status_code == 201 and r.json()["state"] == "MSG_PENDING", r.text
    final = await wait_final(client, t, r.json()["id"])
    assert final["state"] == "MSG_SENT"
    assert datetime.fromisoformat(final["sent_at"]) >= datetime.fromisoformat(send_at)
