"""The organization's own settings: ``GET PATCH /api/v1/organization``, the default servicechain a
message falls back to, the Settings page, the demo organization, and the migration that adds it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from app.cli import _create_demo_organization
from app.config import Settings
from app.messaging.models import Message, Servicechain
from app.tenants.models import Organization, Role, User
from tests.conftest import PG_URL, World, bearer
from tests.pipeline import Tenant, fast_settings, new_contact, setup_chain, tenant, wait_final
from tests.test_api_tenancy import oauth_token
from tests.test_migrations import _commands, _pg
from tests.test_web_pages import csrf, login, post_form

Client = AsyncTestClient[Litestar]
API = "/api/v1/organization"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


async def stored_default(sessions: Any, org_id: str) -> uuid.UUID | None:
    async with sessions() as session:
        return await session.scalar(
            select(Organization.default_servicechain_id).where(Organization.id == uuid.UUID(org_id))
        )


async def set_default(client: Client, t: Tenant, chain_id: str | None) -> Any:
    return await client.patch(API, json={"default_servicechain_id": chain_id}, headers=t.admin)


async def client_bearer(client: Client, world: World, org_id: str, scopes: list[str]) -> dict[str, str]:
    async with world.sessions() as session:
        org = await session.get(Organization, uuid.UUID(org_id))
    assert org is not None
    client_id, secret = await world.api_client(org, scopes)
    return bearer(await oauth_token(client, client_id, secret))


# ---------------------------------------------------------------- the API


async def test_every_member_reads_their_own_organization(client: Client, world: World) -> None:
    t = await tenant(world, credits=7)
    robot = await client_bearer(client, world, t.org_id, ["contacts:read"])
    for headers in (t.admin, t.user, robot):
        r = await client.get(API, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == t.org_id and body["credits"] == 7 and body["plan"] == "PAYG"
        assert body["default_servicechain_id"] is None
        assert set(body) >= {"name", "credits_reserved", "suspended", "created_at", "updated_at"}
    assert (await client.get(API)).status_code == 401


async def test_org_admin_sets_and_clears_the_default(client: Client, world: World, sessions: Any) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    r = await set_default(client, t, chain)
    assert r.status_code == 200, r.text
    assert r.json()["default_servicechain_id"] == chain
    assert (await client.get(API, headers=t.user)).json()["default_servicechain_id"] == chain
    assert str(await stored_default(sessions, t.org_id)) == chain
    # leaving the field out changes nothing; null clears it
    r = await client.patch(API, json={}, headers=t.admin)
    assert r.status_code == 200 and r.json()["default_servicechain_id"] == chain
    r = await set_default(client, t, None)
    assert r.status_code == 200 and r.json()["default_servicechain_id"] is None
    assert await stored_default(sessions, t.org_id) is None


async def test_users_and_narrow_clients_cannot_change_it(client: Client, world: World, sessions: Any) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    r = await client.patch(API, json={"default_servicechain_id": chain}, headers=t.user)
    assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
    reader = await client_bearer(client, world, t.org_id, ["servicechains:read", "users:admin"])
    assert (await client.patch(API, json={"default_servicechain_id": chain}, headers=reader)).status_code == 403
    assert await stored_default(sessions, t.org_id) is None
    # a client that may manage servicechains may choose the default
    writer = await client_bearer(client, world, t.org_id, ["servicechains:write"])
    r = await client.patch(API, json={"default_servicechain_id": chain}, headers=writer)
    assert r.status_code == 200 and r.json()["default_servicechain_id"] == chain


async def test_another_organizations_chain_is_refused_as_an_unknown_one(
    client: Client, world: World, sessions: Any
) -> None:
    a, b = await tenant(world), await tenant(world)
    mine = await setup_chain(client, a, ["log"])
    theirs = await setup_chain(client, b, ["log"])
    assert (await set_default(client, a, mine)).status_code == 200
    foreign = await set_default(client, a, theirs)
    unknown = await set_default(client, a, str(uuid.uuid4()))
    assert foreign.status_code == unknown.status_code == 422
    assert foreign.json() == unknown.json()
    assert foreign.json()["errors"][0]["field"] == "default_servicechain_id"
    assert str(await stored_default(sessions, a.org_id)) == mine  # nothing stored, the old default kept
    assert (await client.patch(API, json={"default_servicechain_id": "nope"}, headers=a.admin)).status_code == 400
    assert (await client.patch(API, json={"name": "Renamed"}, headers=a.admin)).status_code == 400


async def test_nothing_of_another_organization_is_visible_or_changeable(
    client: Client, world: World, sessions: Any
) -> None:
    a, b = await tenant(world), await tenant(world)
    theirs = await setup_chain(client, b, ["log"])
    assert (await set_default(client, b, theirs)).status_code == 200
    body = (await client.get(API, headers=a.admin)).json()
    assert body["id"] == a.org_id and body["default_servicechain_id"] is None
    assert theirs not in json.dumps(body)
    assert (await set_default(client, a, None)).status_code == 200
    assert str(await stored_default(sessions, b.org_id)) == theirs
    # the sysadmin's /organizations shows the field too, for every organization
    sysadmin = bearer(await world.token(await world.user(None, Role.SYSADMIN)))
    shown = (await client.get(f"/api/v1/organizations/{b.org_id}", headers=sysadmin)).json()
    assert shown["default_servicechain_id"] == theirs


async def test_sysadmin_without_organization_gets_403(client: Client, world: World) -> None:
    sysadmin = bearer(await world.token(await world.user(None, Role.SYSADMIN)))
    for r in (
        await client.get(API, headers=sysadmin),
        await client.patch(API, json={"default_servicechain_id": None}, headers=sysadmin),
    ):
        assert r.status_code == 403 and "sysadmins have none" in r.json()["detail"]  # as on the pages (0018)


async def test_openapi_documents_the_endpoint(client: Client) -> None:
    doc = json.loads((await client.get("/schema/openapi.json")).content)
    item = doc["paths"][API]
    assert {"get", "patch"} <= set(item)
    assert item["patch"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OwnOrganizationUpdate"
    )
    schemas = doc["components"]["schemas"]
    assert set(schemas["OwnOrganizationUpdate"]["properties"]) == {"default_servicechain_id"}
    assert "default_servicechain_id" in schemas["Organization"]["properties"]


# ---------------------------------------------------------------- chain resolution and deletion


async def test_the_chain_of_a_message_request_then_contact_then_organization(client: Client, world: World) -> None:
    t = await tenant(world)
    org_chain = await setup_chain(client, t, ["log"], name="org")
    contact_chain = await setup_chain(client, t, ["log"], name="contact")
    named = await setup_chain(client, t, ["log"], name="named")
    assert (await set_default(client, t, org_chain)).status_code == 200
    plain = await new_contact(client, t)
    with_chain = await new_contact(client, t, email="c@example.com", servicechain_id=contact_chain)
    cases = [(plain, None, org_chain), (with_chain, None, contact_chain), (with_chain, named, named)]
    for contact, asked, used in cases:
        body: dict[str, Any] = {"contact_id": contact, "content": "hi"}
        if asked:
            body["servicechain_id"] = asked
        r = await client.post("/api/v1/messages", json=body, headers=t.user)
        assert r.status_code == 201, r.text
        assert r.json()["servicechain_id"] == used


async def test_without_any_default_the_message_is_422_and_says_how_to_fix_it(
    client: Client, world: World, sessions: Any
) -> None:
    t = await tenant(world)
    await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t)
    r = await client.post("/api/v1/messages", json={"contact_id": contact, "content": "hi"}, headers=t.user)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "servicechain_id" in detail and "Settings" in detail and "/api/v1/organization" in detail
    assert r.json()["errors"][0]["field"] == "servicechain_id"
    async with sessions() as session:
        assert await session.scalar(select(sa.func.count()).select_from(Message)) == 0


async def test_deleting_the_default_chain_is_refused(client: Client, world: World) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    assert (await set_default(client, t, chain)).status_code == 200
    r = await client.delete(f"/api/v1/servicechains/{chain}", headers=t.admin)
    assert r.status_code == 409 and "default servicechain" in r.json()["detail"]
    assert (await client.get(f"/api/v1/servicechains/{chain}", headers=t.admin)).status_code == 200
    assert (await set_default(client, t, None)).status_code == 200
    assert (await client.delete(f"/api/v1/servicechains/{chain}", headers=t.admin)).status_code == 204


async def test_deleting_an_organization_with_a_default_chain(client: Client, world: World, sessions: Any) -> None:
    """The foreign keys organization ⇄ servicechain form a cycle: deleting the organization still works."""
    t = await tenant(world)
    assert (await set_default(client, t, await setup_chain(client, t, ["log"]))).status_code == 200
    sysadmin = bearer(await world.token(await world.user(None, Role.SYSADMIN)))
    assert (await client.delete(f"/api/v1/organizations/{t.org_id}", headers=sysadmin)).status_code == 204
    async with sessions() as session:
        assert await session.scalar(select(sa.func.count()).select_from(Servicechain)) == 0


# ---------------------------------------------------------------- the demo organization


@pytest.mark.usefixtures("engine", "worker")
async def test_the_demo_organization_sends_a_first_message_without_naming_a_chain(
    client: Client, world: World, settings: Settings, sessions: Any
) -> None:
    """What `voluble up` creates: its log chain is the default, so a message to a new contact (no chain of
    its own) that names no chain goes through it and reaches MSG_SENT on a real worker."""
    email = f"demo-{uuid.uuid4().hex[:8]}@example.com"
    await _create_demo_organization(settings, email, "demo password 123")
    async with sessions() as session:
        org = await session.scalar(select(Organization).where(Organization.name == "Demo organization"))
        assert org is not None
        chain = await session.get(Servicechain, org.default_servicechain_id)
        assert chain is not None and chain.organization_id == org.id
        assert chain.name == "Default (log)" and chain.services == ["log"]
        admin = await session.scalar(select(User).where(User.email == email))
    assert admin is not None and admin.role == Role.ORG_ADMIN
    token = bearer(await world.token(admin))
    demo = Tenant(str(org.id), token, token)
    contact = await new_contact(client, demo, first_name="Ada")
    r = await client.post(
        "/api/v1/messages", json={"contact_id": contact, "content": "Hi {{ first_name }}"}, headers=demo.admin
    )
    assert r.status_code == 201, r.text
    final = await wait_final(client, demo, r.json()["id"])
    assert final["state"] == "MSG_SENT" and final["service"] == "log" and final["servicechain_id"] == str(chain.id)
    assert "Hi Ada" in (settings.var_dir / "outbox.jsonl").read_text()


# ---------------------------------------------------------------- the Settings page


async def _member(client: Client, world: World, t: Tenant, role: Role) -> None:
    async with world.sessions() as session:
        org = await session.get(Organization, uuid.UUID(t.org_id))
    user = await world.user(org, role)
    r = await login(client, user.email)
    assert r.status_code in (302, 303), r.text


async def test_settings_page_for_an_org_admin_changes_the_default(client: Client, world: World, sessions: Any) -> None:
    t = await tenant(world, credits=12)
    first = await setup_chain(client, t, ["log"], name="First chain")
    second = await setup_chain(client, t, ["log"], name="Second chain")
    await _member(client, world, t, Role.ORG_ADMIN)
    home = await client.get("/")
    assert 'href="/settings"' in home.text
    r = await client.get("/settings")
    assert r.status_code == 200
    assert "Settings" in r.text and "12" in r.text and "Pay as you go" in r.text
    assert 'for="f-default_servicechain_id"' in r.text and 'id="f-default_servicechain_id"' in r.text
    assert 'action="/settings/default-servicechain"' in r.text and 'hx-post="/settings/default-servicechain"' in r.text
    assert "First chain" in r.text and "Second chain" in r.text
    # a plain form post: 303 back to the page, with a flash
    r = await post_form(client, "/settings/default-servicechain", {"default_servicechain_id": first}, page="/settings")
    assert r.status_code == 303 and r.headers["location"] == "/settings"
    assert str(await stored_default(sessions, t.org_id)) == first
    shown = await client.get("/settings")
    assert "Default servicechain set to “First chain”." in shown.text
    assert f'<option value="{first}" selected' in shown.text
    # with htmx: the section comes back in place, the flash out of band
    token = await csrf(client, "/settings")
    hx = {"HX-Request": "true", "HX-Target": "default-chain", "x-csrftoken": token}
    r = await client.post("/settings/default-servicechain", data={"default_servicechain_id": second}, headers=hx)
    assert r.status_code == 200 and r.text.lstrip().startswith('<article id="default-chain">')
    assert f'<option value="{second}" selected' in r.text and 'hx-swap-oob="true"' in r.text
    assert "Second chain" in r.text
    assert str(await stored_default(sessions, t.org_id)) == second
    # clearing it
    r = await client.post("/settings/default-servicechain", data={"default_servicechain_id": ""}, headers=hx)
    assert r.status_code == 200 and "Default servicechain cleared." in r.text
    assert await stored_default(sessions, t.org_id) is None
    # nonsense is a readable error next to the field, nothing stored
    r = await client.post("/settings/default-servicechain", data={"default_servicechain_id": "x"}, headers=hx)
    assert r.status_code == 422 and "Choose a servicechain from the list." in r.text
    assert await stored_default(sessions, t.org_id) is None


async def test_settings_page_is_read_only_for_users(client: Client, world: World, sessions: Any) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"], name="Only chain")
    assert (await set_default(client, t, chain)).status_code == 200
    await _member(client, world, t, Role.USER)
    r = await client.get("/settings")
    assert r.status_code == 200
    assert "Only chain" in r.text and "Only an organization admin can change it." in r.text
    assert "<select" not in r.text and "/settings/default-servicechain" not in r.text
    r = await post_form(client, "/settings/default-servicechain", {"default_servicechain_id": ""}, page="/settings")
    assert r.status_code == 403
    assert str(await stored_default(sessions, t.org_id)) == chain


async def test_settings_page_without_chains_shows_how_to_create_one(client: Client, world: World) -> None:
    t = await tenant(world)
    await _member(client, world, t, Role.ORG_ADMIN)
    r = await client.get("/settings")
    assert r.status_code == 200 and "No servicechain yet" in r.text and 'href="/servicechains/new"' in r.text


async def test_settings_page_never_shows_or_takes_another_organizations_chain(
    client: Client, world: World, sessions: Any
) -> None:
    a, b = await tenant(world), await tenant(world)
    await setup_chain(client, a, ["log"], name="Chain of A")
    theirs = await setup_chain(client, b, ["log"], name="Chain of B")
    await _member(client, world, a, Role.ORG_ADMIN)
    r = await client.get("/settings")
    assert "Chain of A" in r.text and "Chain of B" not in r.text and theirs not in r.text
    r = await post_form(client, "/settings/default-servicechain", {"default_servicechain_id": theirs}, page="/settings")
    assert r.status_code == 422 and "No such servicechain in this organization." in r.text
    assert await stored_default(sessions, a.org_id) is None
    assert await stored_default(sessions, b.org_id) is None


async def test_deleting_the_default_chain_from_its_page_says_why_not(client: Client, world: World) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"], name="Main")
    assert (await set_default(client, t, chain)).status_code == 200
    await _member(client, world, t, Role.ORG_ADMIN)
    r = await post_form(client, f"/servicechains/{chain}/remove", {}, page=f"/servicechains/{chain}")
    assert r.status_code == 303
    shown = await client.get(r.headers["location"])
    assert "“Main” was not deleted." in shown.text and "default servicechain" in shown.text
    assert (await client.get(f"/api/v1/servicechains/{chain}", headers=t.admin)).status_code == 200


async def test_the_compose_page_names_and_uses_the_organization_default(
    client: Client, world: World, sessions: Any
) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"], name="House chain")
    contact = await new_contact(client, t)
    await _member(client, world, t, Role.USER)
    form = {"contact_id": contact, "servicechain_id": "", "content": "Hello", "idempotency_key": uuid.uuid4().hex}
    # no default anywhere: the readable reason, next to the chain select
    r = await post_form(client, "/messages", form, page="/messages/new")
    assert r.status_code == 422 and "under Settings" in r.text
    assert (await set_default(client, t, chain)).status_code == 200
    compose = await client.get(f"/messages/new?contact_id={contact}")
    assert "The contact&#39;s default chain, else the organization&#39;s (House chain)" in compose.text
    r = await post_form(client, "/messages", {**form, "idempotency_key": uuid.uuid4().hex}, page="/messages/new")
    assert r.status_code == 303, r.text
    async with sessions() as session:
        used = await session.scalar(select(Message.servicechain_id).where(Message.contact_id == uuid.UUID(contact)))
    assert str(used) == chain


async def test_sysadmin_has_no_settings_page(client: Client, world: World) -> None:
    sysadmin = await world.user(None, Role.SYSADMIN)
    await login(client, sysadmin.email)
    r = await client.get("/settings")
    assert r.status_code == 403 and "sysadmins have none" in r.text
    assert 'href="/settings"' not in (await client.get("/")).text


# ---------------------------------------------------------------- the migration keeps the data


@pytest.fixture(params=["sqlite", "postgres"])
def database_at_base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'upgraded.db'}"
        return
    name = f"voluble_u_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


ORG = sa.table(
    "organization",
    sa.column("id", GUID()),
    sa.column("name"),
    sa.column("plan"),
    sa.column("credits"),
    sa.column("credits_reserved"),
    sa.column("suspended"),
    sa.column("created_at", DateTimeUTC()),
    sa.column("updated_at", DateTimeUTC()),
)
USER = sa.table(
    "user_account",
    sa.column("id", GUID()),
    sa.column("email"),
    sa.column("name"),
    sa.column("role"),
    sa.column("organization_id", GUID()),
    sa.column("is_active"),
    sa.column("session_version"),
    sa.column("created_at", DateTimeUTC()),
    sa.column("updated_at", DateTimeUTC()),
)


async def _rows(url: str, *, seed: bool = False) -> dict[str, int]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            if seed:
                now = datetime.now(UTC)
                org_id = uuid.uuid4()
                stamp = {"created_at": now, "updated_at": now}
                await conn.execute(
                    sa.insert(ORG).values(
                        id=org_id, name="Kept", plan="PAYG", credits=3, credits_reserved=0, suspended=False, **stamp
                    )
                )
                await conn.execute(
                    sa.insert(USER).values(
                        id=uuid.uuid4(),
                        email="kept@example.com",
                        name="Kept",
                        role="USER",
                        organization_id=org_id,
                        is_active=True,
                        session_version=1,
                        **stamp,
                    )
                )
            counts = {}
            for table in ("organization", "user_account"):
                counts[table] = (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one()
            return counts
    finally:
        await engine.dispose()


def test_upgrade_and_downgrade_keep_every_organizations_data(database_at_base: str, tmp_path: Path) -> None:
    """On SQLite the migration copies the organization table: with foreign keys on, dropping the old
    one would cascade into every table that references it (users, contacts, chains, messages)."""
    commands = _commands(database_at_base, tmp_path)
    commands.upgrade("3b67195e418f")
    assert asyncio.run(_rows(database_at_base, seed=True)) == {"organization": 1, "user_account": 1}
    commands.upgrade("head")
    assert asyncio.run(_rows(database_at_base)) == {"organization": 1, "user_account": 1}
    commands.downgrade("3b67195e418f")
    assert asyncio.run(_rows(database_at_base)) == {"organization": 1, "user_account": 1}
