"""``POST /hooks/{service}/{organization_id}``: who is answered 404, 403, 400, 413, on both databases.

The provider protocols (signed Twilio callbacks, Telegram updates) are tested in
tests/test_hooks_providers.py against local servers speaking them.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.config import Settings
from tests.conftest import World
from tests.pipeline import Inbox, fast_settings, smtp_credentials, smtp_server, tenant

__all__ = ["smtp_server"]  # the fixture


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


async def test_unknown_service_or_org_without_credentials_is_404(client: AsyncTestClient[Any], world: World) -> None:
    t = await tenant(world)
    for service in ("nope", "log"):  # not installed; installed but receives nothing (no credentials)
        r = await client.post(f"/hooks/{service}/{t.org_id}", content=b"x=1")
        assert r.status_code == 404, (service, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    # an installed service the organization has no credentials for; an organization that does not exist
    assert (await client.post(f"/hooks/smtp/{t.org_id}", content=b"x=1")).status_code == 404
    assert (await client.post(f"/hooks/smtp/{uuid.uuid4()}", content=b"x=1")).status_code == 404
    assert (await client.post("/hooks/smtp/not-a-uuid", content=b"x=1")).status_code in (400, 404)


async def test_a_service_that_takes_no_callbacks_refuses_them_403(
    client: AsyncTestClient[Any], world: World, smtp_server: tuple[Inbox, int]
) -> None:
    t = await tenant(world)
    await smtp_credentials(client, t, smtp_server[1])
    r = await client.post(f"/hooks/smtp/{t.org_id}", content=b"x=1")
    assert r.status_code == 403 and "no callbacks" in r.json()["detail"]


async def test_oversized_hook_bodies_are_413_never_500(
    client: AsyncTestClient[Any], world: World, smtp_server: tuple[Inbox, int]
) -> None:
    t = await tenant(world)
    await smtp_credentials(client, t, smtp_server[1])
    r = await client.post(f"/hooks/smtp/{t.org_id}", content=b"x" * (65 * 1024))
    assert r.status_code == 413


async def test_hooks_need_no_csrf_token_nor_bearer(
    client: AsyncTestClient[Any], world: World, smtp_server: tuple[Inbox, int]
) -> None:
    """Providers call without cookies or tokens: the answer is the plugin's, not 401 or a CSRF 403."""
    t = await tenant(world)
    await smtp_credentials(client, t, smtp_server[1])
    r = await client.post(
        f"/hooks/smtp/{t.org_id}", content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 403 and "csrf" not in r.text.lower()
