from __future__ import annotations

from litestar.testing import AsyncTestClient

from app.tenants.models import Role
from tests.conftest import World, bearer


async def test_health_and_me(client: AsyncTestClient, world: World) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200, ready.text
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    token = await world.token(admin)
    me = await client.get("/api/v1/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    assert me.json()["organization"]["id"] == str(org.id)
    assert (await client.get("/api/v1/me")).status_code == 401
    assert (await client.get("/api/v1/me")).headers["content-type"].startswith("application/problem+json")
