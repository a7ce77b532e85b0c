"""The webhooks API's rules (network guard, CRUD, secret once, cross-tenant, roles) and the webhook pages."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from app.clock import utcnow
from app.config import Settings
from app.tenants.models import Role
from app.webhooks import delivery
from app.webhooks.models import DeliveryStatus, WebhookEndpoint
from app.webhooks.services import WebhookSecrets
from tests.conftest import World, bearer
from tests.pipeline import fast_settings, new_contact, tenant
from tests.webhooks_receiver import (
    Receiver,
    attempt_at,
    create_webhook,
    due_at,
    fan_out_at,
    opt_out,
    the_delivery,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


# ------------------------------------------------------------------ the network guard, the API's rules


async def test_private_addresses_are_refused_unless_allowed(
    settings: Settings,
    engine: Any,
    redis: Any,
    world: World,
    sessions: async_sessionmaker[AsyncSession],
    client: AsyncTestClient[Any],
    receiver: Receiver,
) -> None:
    from app.asgi import create_app

    strict = dataclasses.replace(settings, security=dataclasses.replace(settings.security, allow_private_targets=False))
    t = await tenant(world)
    async with AsyncTestClient(app=create_app(strict)) as guarded:
        for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/x", "http://[::1]/x", "http://169.254.169.254/"):
            r = await guarded.post("/api/v1/webhooks", json={"url": url}, headers=t.admin)
            assert r.status_code == 422, (url, r.text)
        for url in ("ftp://example.com/x", "not a url", ""):
            r = await guarded.post("/api/v1/webhooks", json={"url": url}, headers=t.admin)
            assert r.status_code in (400, 422), (url, r.text)
    # allowed (as in these tests): created; a delivery under the strict guard is refused, not sent
    hook = await create_webhook(client, t, receiver.url)
    contact = await new_contact(client, t)
    await opt_out(client, t, contact)
    now = utcnow()
    await fan_out_at(sessions, now)
    d = await the_delivery(sessions, hook["id"])
    async with sessions() as session:
        status = await delivery.attempt(session, WebhookSecrets(strict), d.id, allow_private=False, now=now)
    assert status == DeliveryStatus.FAILED and receiver.requests == []
    r = await client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=t.admin)
    (attempt,) = r.json()["items"][0]["attempts"]
    assert attempt["status_code"] is None and "not allowed" in attempt["error"]


async def test_crud_and_the_secret_shown_once(client: AsyncTestClient[Any], world: World, receiver: Receiver) -> None:
    t = await tenant(world)
    hook = await create_webhook(client, t, receiver.url, description="CRM")
    assert hook["event_types"] == [
        "message.state_changed",
        "message.received",
        "contact.opted_out",
        "contact.opted_in",
        "blast.completed",
    ]
    assert hook["enabled"] is True
    r = await client.get("/api/v1/webhooks", headers=t.admin)
    assert r.status_code == 200 and [h["id"] for h in r.json()["items"]] == [hook["id"]]
    assert "secret" not in r.json()["items"][0]
    r = await client.patch(
        f"/api/v1/webhooks/{hook['id']}", json={"event_types": ["message.received"], "enabled": False}, headers=t.admin
    )
    assert r.status_code == 200 and r.json()["event_types"] == ["message.received"] and not r.json()["enabled"]
    for body in ({"event_types": ["nope"]}, {"event_types": []}, {"url": "x" * 3000}, {"unknown": 1}):
        r = await client.patch(f"/api/v1/webhooks/{hook['id']}", json=body, headers=t.admin)
        assert r.status_code == 400, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await client.post(f"/api/v1/webhooks/{hook['id']}/test", headers=t.admin)
    assert r.status_code == 422  # disabled
    r = await client.delete(f"/api/v1/webhooks/{hook['id']}", headers=t.admin)
    assert r.status_code == 204
    assert (await client.get(f"/api/v1/webhooks/{hook['id']}", headers=t.admin)).status_code == 404


async def test_cross_tenant_and_roles(
    client: AsyncTestClient[Any], world: World, sessions: async_sessionmaker[AsyncSession], receiver: Receiver
) -> None:
    a = await tenant(world)
    b = await tenant(world)
    hook = await create_webhook(client, a, receiver.url)
    own = await create_webhook(client, b, receiver.url)
    contact = await new_contact(client, a)
    await opt_out(client, a, contact)
    await fan_out_at(sessions, utcnow())
    d = await the_delivery(sessions, hook["id"])
    base = f"/api/v1/webhooks/{hook['id']}"
    calls = [
        ("GET", base, None),
        ("PATCH", base, {"enabled": False}),
        ("DELETE", base, None),
        ("POST", base + "/rotate-secret", None),
        ("GET", base + "/deliveries", None),
        ("POST", base + f"/deliveries/{d.id}/retry", None),
        ("POST", base + "/test", None),
        # B's own endpoint with A's delivery
        ("POST", f"/api/v1/webhooks/{own['id']}/deliveries/{d.id}/retry", None),
    ]
    for method, url, body in calls:
        r = await client.request(method, url, json=body, headers=b.admin)
        assert r.status_code == 404, (method, url, r.text)
    r = await client.get("/api/v1/webhooks", headers=b.admin)
    assert [h["id"] for h in r.json()["items"]] == [own["id"]]
    for method, url, body in [
        *calls[:7],
        ("GET", "/api/v1/webhooks", None),
        ("POST", "/api/v1/webhooks", {"url": receiver.url}),
    ]:
        r = await client.request(method, url, json=body, headers=a.user)
        assert r.status_code == 403, (method, url, r.text)
    sysadmin = await world.user(None, Role.SYSADMIN)
    r = await client.get("/api/v1/webhooks", headers=bearer(await world.token(sysadmin)))
    assert r.status_code == 403
    async with sessions() as session:
        endpoint = await session.get_one(WebhookEndpoint, UUID(hook["id"]))
    assert endpoint.enabled and hook["secret"] not in endpoint.secret_encrypted  # stored encrypted


# ------------------------------------------------------------------ pages


async def test_pages_create_show_the_secret_once_the_log_and_the_buttons(
    client: AsyncTestClient[Any],
    world: World,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    receiver: Receiver,
) -> None:
    from tests.test_web_pages import cookie_jar, login, post_form, use_cookies

    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    assert (await login(client, admin.email)).status_code == 303
    r = await client.get("/webhooks")
    assert r.status_code == 200 and "No webhook endpoints yet" in r.text
    r = await post_form(client, "/webhooks", {"url": "", "event_types": []}, page="/webhooks")
    assert r.status_code == 422 and "Choose at least one event type." in r.text
    r = await post_form(
        client,
        "/webhooks",
        {"url": receiver.url, "description": "CRM", "event_types": ["contact.opted_out", "contact.opted_in"]},
        page="/webhooks",
    )
    assert r.status_code == 201, r.text
    secret = re.search(r'value="(whsec_[^"]+)"', r.text)
    assert secret and r.headers["cache-control"] == "no-store"
    async with sessions() as session:
        endpoint = await session.scalar(select(WebhookEndpoint).where(WebhookEndpoint.organization_id == org.id))
    assert endpoint is not None and endpoint.event_types == ["contact.opted_out", "contact.opted_in"]
    detail = f"/webhooks/{endpoint.id}"
    r = await client.get(detail)
    assert r.status_code == 200 and secret.group(1) not in r.text and "No deliveries yet" in r.text

    r = await post_form(client, detail + "/test", {}, page=detail)
    assert r.status_code == 303
    now = utcnow()
    (delivery_id, _), *_ = await due_at(sessions, now)
    assert await attempt_at(sessions, settings, delivery_id, now) == DeliveryStatus.DELIVERED
    Webhook(secret.group(1)).verify(receiver.requests[0][1], receiver.requests[0][0])
    r = await client.get(detail)
    assert "<code>ping</code>" in r.text and "HTTP 200" in r.text and "delivered" in r.text
    r = await post_form(client, f"{detail}/deliveries/{delivery_id}/retry", {}, page=detail)
    assert r.status_code == 303
    assert [d for d, _ in await due_at(sessions, utcnow())] == [delivery_id]

    r = await post_form(client, detail + "/rotate-secret", {}, page=detail)
    assert r.status_code == 201 and "previous secret keeps signing" in r.text
    r = await post_form(client, detail + "/settings", {"url": "ftp://x", "event_types": ["ping"]}, page=detail)
    assert r.status_code in (303, 422)
    r = await post_form(
        client,
        detail + "/settings",
        {"url": receiver.url, "event_types": ["contact.opted_in"], "enabled": ""},
        page=detail,
    )
    assert r.status_code == 303
    async with sessions() as session:
        endpoint = await session.get_one(WebhookEndpoint, endpoint.id, populate_existing=True)
    assert endpoint.event_types == ["contact.opted_in"] and endpoint.enabled is False

    # another organization's admin: not found; a user: forbidden (one client per app: swap the cookies)
    admin_cookies = cookie_jar(client)
    client.cookies.clear()
    other = await world.user(await world.org(), Role.ORG_ADMIN)
    assert (await login(client, other.email)).status_code == 303
    assert (await client.get(detail)).status_code == 404
    for action in ("/test", "/rotate-secret", "/delete", f"/deliveries/{delivery_id}/retry"):
        r = await post_form(client, detail + action, {}, page="/webhooks")
        assert r.status_code == 404, (action, r.status_code)
    client.cookies.clear()
    assert (await login(client, (await world.user(org, Role.USER)).email)).status_code == 303
    assert (await client.get("/webhooks")).status_code == 403
    use_cookies(client, admin_cookies)
    r = await post_form(client, detail + "/delete", {}, page=detail)
    assert r.status_code == 303 and (await client.get(detail)).status_code == 404
