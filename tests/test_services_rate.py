"""An organization's own send rate on a service: set on its credentials (API and the services page),
bounded by the plugin's ``rate_per_second``, audited by name, tenant-isolated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.asgi import create_app
from app.audit.models import AuditEntry
from app.config import Settings
from app.servicehost.models import ServiceCredential
from app.servicehost.services import CredentialService
from app.tenants.models import Role
from tests import paced_plugin
from tests.conftest import World, bearer
from tests.test_services_api import Org, make_org
from tests.test_web_pages import login, post_form

API = "/api/v1"
URL = f"{API}/services/{paced_plugin.NAME}"
Client = AsyncTestClient[Litestar]


@pytest.fixture
async def app(
    settings: Settings, engine: Any, redis: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Litestar:
    paced_plugin.install(tmp_path, monkeypatch)
    return create_app(settings)


async def with_credentials(client: Client, world: World) -> Org:
    org = await make_org(world)
    r = await client.put(f"{URL}/credentials", json={"label": "x"}, headers=org.admin)
    assert r.status_code == 200 and r.json()["rate_per_second"] is None, r.text
    return org


async def rate_of(client: Client, org: Org) -> Any:
    detail = (await client.get(URL, headers=org.user)).json()
    listed = {s["name"]: s for s in (await client.get(f"{API}/services", headers=org.user)).json()["items"]}
    assert listed[paced_plugin.NAME]["rate_per_second"] == detail["rate_per_second"]
    assert detail["default_rate_per_second"] == paced_plugin.RATE
    return detail["rate_per_second"]


async def test_set_change_and_clear_the_rate(
    client: Client, world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a = await with_credentials(client, world)
    r = await client.patch(f"{URL}/credentials", json={"rate_per_second": 2.5}, headers=a.admin)
    assert r.status_code == 200 and r.json()["rate_per_second"] == 2.5 and r.json()["has_credentials"]
    assert await rate_of(client, a) == 2.5
    # saving the credentials again keeps the rate; the PUT may set it too, or clear it (null)
    assert (await client.put(f"{URL}/credentials", json={"label": "y"}, headers=a.admin)).json()[
        "rate_per_second"
    ] == 2.5
    put = await client.put(f"{URL}/credentials", json={"label": "y", "rate_per_second": 1}, headers=a.admin)
    assert put.status_code == 200 and put.json()["rate_per_second"] == 1
    cleared = await client.patch(f"{URL}/credentials", json={"rate_per_second": None}, headers=a.admin)
    assert cleared.status_code == 200 and cleared.json()["rate_per_second"] is None
    assert (
        await client.put(f"{URL}/credentials", json={"label": "z", "rate_per_second": 3}, headers=a.admin)
    ).status_code == 200
    assert (
        await client.put(f"{URL}/credentials", json={"label": "z", "rate_per_second": None}, headers=a.admin)
    ).json()["rate_per_second"] is None

    # the rate is beside the ciphertext, not in it: the plugin never sees it
    settings = client.app.state.settings
    async with sessions() as session:
        creds = await CredentialService(session=session, organization_id=a.org.id, settings=settings).get_decrypted(
            paced_plugin.NAME
        )
        assert creds.label == "z" and not hasattr(creds, "rate_per_second")
        await client.patch(f"{URL}/credentials", json={"rate_per_second": 4}, headers=a.admin)
        row = await session.scalar(select(ServiceCredential).where(ServiceCredential.organization_id == a.org.id))
        assert row is not None and row.rate_per_second == 4.0 and "rate" not in row.ciphertext

    # audited like every credentials change: by field name, never the value
    async with sessions() as session:
        entries = list(
            await session.scalars(
                select(AuditEntry)
                .where(AuditEntry.organization_id == a.org.id, AuditEntry.target_type == "service_credential")
                .order_by(AuditEntry.at)
            )
        )
    assert entries and all(e.action == "service_credential.saved" for e in entries)
    summaries = [e.summary for e in entries]
    assert "paced: rate_per_second" in summaries and "paced: credentials, rate_per_second" in summaries
    assert not any(c.isdigit() for s in summaries for c in s)


BAD_RATES = [(0, 400), (-1, 400), (0.001, 400), (1001, 400), ("fast", 400), (True, 400), (6, 422), (5.01, 422)]


async def test_bad_rates_are_refused(client: Client, world: World) -> None:
    a = await with_credentials(client, world)
    for value, status in BAD_RATES:
        r = await client.patch(f"{URL}/credentials", json={"rate_per_second": value}, headers=a.admin)
        assert r.status_code == status and "rate_per_second" in r.text, (value, r.text)
        if status == 422:  # above the service's own rate: an organization may only lower it
            assert "at most 5 messages per second" in r.json()["detail"]
        put = await client.put(f"{URL}/credentials", json={"label": "x", "rate_per_second": value}, headers=a.admin)
        assert put.status_code == 422 and "rate_per_second" in put.text, (value, put.text)
    assert await rate_of(client, a) is None


async def test_rate_needs_credentials_and_an_org_admin(client: Client, world: World) -> None:
    a = await make_org(world)
    assert (await client.patch(f"{URL}/credentials", json={"rate_per_second": 1}, headers=a.admin)).status_code == 404
    log = await client.patch(f"{API}/services/log/credentials", json={"rate_per_second": 1}, headers=a.admin)
    assert log.status_code == 422 and "needs no credentials" in log.json()["detail"]
    assert (
        await client.patch(f"{API}/services/nope/credentials", json={"rate_per_second": 1}, headers=a.admin)
    ).status_code == 404
    assert (
        await client.patch(f"{URL}/credentials", json={"rate_per_second": 1, "x": 1}, headers=a.admin)
    ).status_code == 400
    await client.put(f"{URL}/credentials", json={"label": "x"}, headers=a.admin)
    assert (await client.patch(f"{URL}/credentials", json={"rate_per_second": 1}, headers=a.user)).status_code == 403
    sysadmin = bearer(await world.token(await world.user(None, Role.SYSADMIN)))
    assert (await client.patch(f"{URL}/credentials", json={"rate_per_second": 1}, headers=sysadmin)).status_code == 403
    assert await rate_of(client, a) is None


async def test_one_organization_never_changes_anothers_rate(client: Client, world: World) -> None:
    a, b = await with_credentials(client, world), await with_credentials(client, world)
    await client.patch(f"{URL}/credentials", json={"rate_per_second": 1}, headers=a.admin)
    assert await rate_of(client, b) is None
    await client.patch(f"{URL}/credentials", json={"rate_per_second": 3}, headers=b.admin)
    assert await rate_of(client, a) == 1 and await rate_of(client, b) == 3
    c = await make_org(world)  # no credentials: the other organizations' rows are not its own
    assert (await client.patch(f"{URL}/credentials", json={"rate_per_second": 2}, headers=c.admin)).status_code == 404
    assert await rate_of(client, a) == 1 and await rate_of(client, b) == 3


# ---------------------------------------------------------------- the services page


async def test_the_page_shows_and_changes_the_rate(client: Client, world: World) -> None:
    a = await with_credentials(client, world)
    admin = await world.user(a.org, Role.ORG_ADMIN)
    assert (await login(client, admin.email)).status_code == 303
    page = await client.get(f"/services/{paced_plugin.NAME}")
    assert page.status_code == 200
    assert '<label for="f-rate_per_second">Messages per second for your organization (optional)' in page.text
    assert 'action="/services/paced/rate"' in page.text and "5 messages per second" in page.text

    path, at = f"/services/{paced_plugin.NAME}/rate", f"/services/{paced_plugin.NAME}"
    saved = await post_form(client, path, {"rate_per_second": "1.5"}, page=at)
    assert saved.status_code == 303, saved.text
    shown = await client.get(at)
    assert "at most 1.5 messages per second" in shown.text and 'value="1.5"' in shown.text
    assert await rate_of(client, a) == 1.5

    for bad, message in (("9", "at most 5 messages per second"), ("lots", "Enter a number"), ("0", "between 0.01")):
        refused = await post_form(client, path, {"rate_per_second": bad}, page=at)
        assert refused.status_code == 422 and message in refused.text, bad
        assert 'aria-invalid="true"' in refused.text and f'value="{bad}"' in refused.text
    assert await rate_of(client, a) == 1.5
    cleared = await post_form(client, path, {"rate_per_second": ""}, page=at)
    assert cleared.status_code == 303 and await rate_of(client, a) is None


async def test_the_page_is_the_organizations_own(client: Client, world: World) -> None:
    a, b = await with_credentials(client, world), await with_credentials(client, world)
    await client.patch(f"{URL}/credentials", json={"rate_per_second": 2}, headers=a.admin)
    path, at = f"/services/{paced_plugin.NAME}/rate", f"/services/{paced_plugin.NAME}"

    b_admin = await world.user(b.org, Role.ORG_ADMIN)
    assert (await login(client, b_admin.email)).status_code == 303
    page = await client.get(at)
    assert "at most 2 messages per second" not in page.text and 'value=""' in page.text
    assert (await post_form(client, path, {"rate_per_second": "4"}, page=at)).status_code == 303
    assert await rate_of(client, a) == 2 and await rate_of(client, b) == 4

    await client.post("/logout", headers={"x-csrftoken": client.cookies.get("voluble_csrf", "")})
    a_user = await world.user(a.org, Role.USER)
    assert (await login(client, a_user.email)).status_code == 303
    page = await client.get(at)
    assert "at most 2 messages per second" in page.text and 'action="/services/paced/rate"' not in page.text
    assert (await post_form(client, path, {"rate_per_second": "1"}, page=at)).status_code == 403
    assert await rate_of(client, a) == 2
