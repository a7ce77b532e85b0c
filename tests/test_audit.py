"""The audit log: each change recorded with its actor, organization, target and IP in the transaction of
the change; failed logins too; never a secret; read-only; org admins see their organization's only."""

from __future__ import annotations

import csv
import io
from typing import Any
from uuid import UUID

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.models import AuditEntry
from app.contacts.services import ContactService
from app.tenants.models import Organization, Role, User
from tests.conftest import PASSWORD, World, bearer
from tests.test_services_api import (  # noqa: F401  (fixtures: local SMTP and webhook servers)
    HOOK_SECRET,
    SMTP_PASSWORD,
    app,
    hook_url,
    private_settings,
    smtp_body,
    smtp_port,
)
from tests.test_web_pages import login, post_form

API = "/api/v1"
IP = "testclient"  # the test client's address, as the server sees it
USER_PASSWORD = "a user password, Kx81-unique"
NEW_PASSWORD = "another password, Wq27-unique"
WRONG_PASSWORD = "not the password, Jf44-unique"
Client = AsyncTestClient[Litestar]
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


async def entries(sessions: async_sessionmaker[AsyncSession], **where: Any) -> list[AuditEntry]:
    async with sessions() as session:
        statement = select(AuditEntry).filter_by(**where).order_by(AuditEntry.at)
        return list(await session.scalars(statement))


async def one(sessions: async_sessionmaker[AsyncSession], action: str, target_id: Any = None) -> AuditEntry:
    where: dict[str, Any] = {"action": action}
    if target_id is not None:
        where["target_id"] = str(target_id)
    found = await entries(sessions, **where)
    assert len(found) == 1, (action, [(e.action, e.target_id) for e in await entries(sessions)])
    return found[0]


def by(entry: AuditEntry, actor: User, org_id: Any) -> None:
    assert (entry.actor_kind, entry.actor_id, entry.actor_name) == ("user", actor.id, actor.name), entry.action
    assert entry.organization_id == org_id and entry.ip == IP, entry.action


async def test_each_change_is_recorded_with_actor_organization_target_and_ip_and_no_secret(
    client: Client,
    world: World,
    sessions: async_sessionmaker[AsyncSession],
    smtp_port: int,  # noqa: F811
    hook_url: str,  # noqa: F811
) -> None:
    sysadmin = await world.user(None, Role.SYSADMIN)
    sys_h = bearer(await world.token(sysadmin))

    # organizations (sysadmin): create, suspend, reactivate, credits
    r = await client.post(f"{API}/organizations", json={"name": "Audited Ltd", "plan": "PAY_IN_ADVANCE"}, headers=sys_h)
    assert r.status_code == 201, r.text
    org_id = UUID(r.json()["id"])
    by(await one(sessions, "organization.created", org_id), sysadmin, org_id)
    assert (await client.patch(f"{API}/organizations/{org_id}", json={"suspended": True}, headers=sys_h)).is_success
    assert (await client.patch(f"{API}/organizations/{org_id}", json={"suspended": False}, headers=sys_h)).is_success
    by(await one(sessions, "organization.suspended", org_id), sysadmin, org_id)
    by(await one(sessions, "organization.reactivated", org_id), sysadmin, org_id)
    assert (await client.post(f"{API}/organizations/{org_id}/credits", json={"amount": 50}, headers=sys_h)).is_success
    credits = await one(sessions, "organization.credits_added", org_id)
    by(credits, sysadmin, org_id)
    assert credits.summary == "credits (+50)"

    async with sessions() as session:
        org = await session.get(Organization, org_id)
    assert org is not None
    admin = await world.user(org, Role.ORG_ADMIN)
    admin_raw_token = await world.token(admin)
    adm = bearer(admin_raw_token)

    # users: create (with a password), role change, update, deactivate, delete
    body = {"email": "audited@example.com", "name": "Audited", "password": USER_PASSWORD}
    r = await client.post(f"{API}/users", json=body, headers=adm)
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    created = await one(sessions, "user.created", user_id)
    by(created, admin, org_id)
    assert "password" in created.summary and "email" in created.summary
    assert (await client.patch(f"{API}/users/{user_id}", json={"role": "org_admin"}, headers=adm)).is_success
    by(await one(sessions, "user.role_changed", user_id), admin, org_id)
    assert (await client.patch(f"{API}/users/{user_id}", json={"password": NEW_PASSWORD}, headers=adm)).is_success
    assert (await one(sessions, "user.password_changed", user_id)).summary == "password"
    assert (await client.patch(f"{API}/users/{user_id}", json={"is_active": False}, headers=adm)).is_success
    by(await one(sessions, "user.deactivated", user_id), admin, org_id)
    assert (await client.delete(f"{API}/users/{user_id}", headers=adm)).status_code == 204
    by(await one(sessions, "user.deleted", user_id), admin, org_id)

    # API clients: create, revoke; the client's OAuth login and a failed one
    r = await client.post(f"{API}/clients", json={"name": "CRM", "scopes": ["contacts:read"]}, headers=adm)
    assert r.status_code == 201, r.text
    api_client_id, client_id, client_secret = r.json()["id"], r.json()["client_id"], r.json()["client_secret"]
    by(await one(sessions, "api_client.created", api_client_id), admin, org_id)
    grant = {"grant_type": "client_credentials"}
    ok = await client.post("/oauth/token", data=grant, auth=(client_id, client_secret))
    assert ok.status_code == 200, ok.text
    client_token = ok.json()["access_token"]
    login_entry = await one(sessions, "auth.client_login", api_client_id)
    assert (login_entry.actor_kind, login_entry.actor_id, login_entry.organization_id, login_entry.ip) == (
        "client",
        UUID(api_client_id),
        org_id,
        IP,
    )
    bad = await client.post("/oauth/token", data=grant, auth=(client_id, WRONG_PASSWORD))
    assert bad.status_code == 401
    failed = await one(sessions, "auth.client_login_failed", api_client_id)
    assert (failed.actor_kind, failed.actor_name, failed.organization_id, failed.ip) == (
        "anonymous",
        client_id,
        org_id,
        IP,
    )
    assert (await client.delete(f"{API}/clients/{api_client_id}", headers=adm)).status_code == 204
    by(await one(sessions, "api_client.revoked", api_client_id), admin, org_id)

    # personal tokens: create, revoke
    r = await client.post(f"{API}/tokens", json={"name": "laptop"}, headers=adm)
    assert r.status_code == 201, r.text
    token_id, token_value = r.json()["id"], r.json()["token"]
    by(await one(sessions, "token.created", token_id), admin, org_id)
    assert (await client.delete(f"{API}/tokens/{token_id}", headers=adm)).status_code == 204
    by(await one(sessions, "token.revoked", token_id), admin, org_id)

    # service credentials: saved (twice), deleted; never their values
    creds = f"{API}/services"
    assert (await client.put(f"{creds}/smtp/credentials", json=smtp_body(smtp_port), headers=adm)).is_success
    hook = {"url": hook_url, "secret": HOOK_SECRET}
    assert (await client.put(f"{creds}/webhook/credentials", json=hook, headers=adm)).is_success
    assert (await client.put(f"{creds}/webhook/credentials", json=hook, headers=adm)).is_success
    saved = await entries(sessions, action="service_credential.saved")
    assert [e.summary.split(":")[0] for e in saved] == ["smtp", "webhook", "webhook"]
    for e in saved:
        by(e, admin, org_id)
    assert (await client.delete(f"{creds}/webhook/credentials", headers=adm)).status_code == 204
    deleted = await one(sessions, "service_credential.deleted")
    by(deleted, admin, org_id)
    assert deleted.target_id == saved[1].target_id and deleted.summary == "webhook"

    # servicechains and the organization's default chain
    r = await client.post(f"{API}/servicechains", json={"name": "main", "services": ["log"]}, headers=adm)
    assert r.status_code == 201, r.text
    chain_id = r.json()["id"]
    by(await one(sessions, "servicechain.created", chain_id), admin, org_id)
    assert (await client.patch(f"{API}/servicechains/{chain_id}", json={"name": "primary"}, headers=adm)).is_success
    assert (await one(sessions, "servicechain.updated", chain_id)).summary == "name"
    r = await client.patch(f"{API}/organization", json={"default_servicechain_id": chain_id}, headers=adm)
    assert r.is_success, r.text
    by(await one(sessions, "organization.default_chain_changed", org_id), admin, org_id)
    assert (await client.patch(f"{API}/organization", json={"default_servicechain_id": None}, headers=adm)).is_success
    assert (await client.delete(f"{API}/servicechains/{chain_id}", headers=adm)).status_code == 204
    by(await one(sessions, "servicechain.deleted", chain_id), admin, org_id)

    # contacts: opt-out and opt-in by an admin; a STOP keyword (the system, via the service)
    r = await client.post(f"{API}/contacts", json={"first_name": "Ann", "phone": "+447911123456"}, headers=adm)
    contact_id = r.json()["id"]
    assert await entries(sessions, target_type="contact") == []  # creating a contact is not audited
    assert (await client.post(f"{API}/contacts/{contact_id}/opt-out", headers=adm)).is_success
    assert (await client.post(f"{API}/contacts/{contact_id}/opt-in", headers=adm)).is_success
    by(await one(sessions, "contact.opted_out", contact_id), admin, org_id)
    by(await one(sessions, "contact.opted_in", contact_id), admin, org_id)
    async with sessions() as session:  # what the inbound path runs on a STOP (a job or a provider's hook)
        await ContactService(session=session, organization_id=org_id).set_opt_out(UUID(contact_id), True, via="twilio")
        await session.commit()
    stop = (await entries(sessions, action="contact.opted_out"))[-1]
    assert (stop.actor_kind, stop.actor_id, stop.organization_id, stop.ip) == ("system", None, org_id, None)
    assert "via twilio" in stop.summary

    # sign-ins: a failed one (never the password) and a successful one, from the login page
    member = await world.user(org, Role.USER)
    assert (await login(client, member.email, WRONG_PASSWORD)).status_code == 400
    failed_login = (await entries(sessions, action="auth.login_failed"))[-1]
    assert (failed_login.actor_kind, failed_login.actor_name, failed_login.ip) == ("anonymous", member.email, IP)
    assert (await login(client, member.email, PASSWORD)).status_code == 303
    by(await one(sessions, "auth.login", member.id), member, org_id)

    # no secret, anywhere in the table
    secrets = [
        USER_PASSWORD,
        NEW_PASSWORD,
        WRONG_PASSWORD,
        PASSWORD,
        client_secret,
        client_token,
        admin_raw_token,
        token_value,
        SMTP_PASSWORD,
        HOOK_SECRET,
    ]
    columns = [c.name for c in AuditEntry.__table__.columns if isinstance(c.type, String | Text)]
    rows = await entries(sessions)
    assert len(rows) > 25
    for row in rows:
        for column in columns:
            value = str(getattr(row, column) or "")
            for secret in secrets:
                assert secret not in value, (row.action, column)


async def test_reading_is_for_org_admins_of_their_own_organization_and_read_only(
    client: Client, world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a_org, b_org = await world.org(), await world.org()
    a_admin, b_admin = await world.user(a_org, Role.ORG_ADMIN), await world.user(b_org, Role.ORG_ADMIN)
    a_h, b_h = bearer(await world.token(a_admin)), bearer(await world.token(b_admin))
    a_user = await world.user(a_org, Role.USER)
    for h, name in ((a_h, "a-chain"), (b_h, "b-chain")):
        assert (
            await client.post(f"{API}/servicechains", json={"name": name, "services": ["log"]}, headers=h)
        ).is_success

    chains = {"target_type": "servicechain"}
    everything_a = (await client.get(f"{API}/audit", headers=a_h)).json()
    assert everything_a["total"] >= 3  # the accounts the test made (by the system), and the chain
    assert {i["organization_id"] for i in everything_a["items"]} == {str(a_org.id)}
    mine = (await client.get(f"{API}/audit", params=chains, headers=a_h)).json()
    assert mine["total"] == 1 and mine["items"][0]["action"] == "servicechain.created"
    # naming the other organization changes nothing for an org admin
    other = (await client.get(f"{API}/audit", params={**chains, "organization_id": str(b_org.id)}, headers=a_h)).json()
    assert other["total"] == 1 and other["items"][0]["organization_id"] == str(a_org.id)
    export = await client.get(f"{API}/audit/export", params={"organization_id": str(b_org.id)}, headers=a_h)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == everything_a["total"] and {r["organization_id"] for r in rows} == {str(a_org.id)}

    # filters
    chain_only = {"actor": str(a_admin.id), "action": "servicechain.created"}
    assert (await client.get(f"{API}/audit", params={"action": "user.deleted"}, headers=a_h)).json()["total"] == 0
    assert (await client.get(f"{API}/audit", params=chain_only, headers=a_h)).json()["total"] == 1
    assert (await client.get(f"{API}/audit", params={"actor": str(b_admin.id)}, headers=a_h)).json()["total"] == 0
    since = "2999-01-01T00:00:00Z"
    assert (await client.get(f"{API}/audit", params={"since": since}, headers=a_h)).json()["total"] == 0
    assert (await client.get(f"{API}/audit", params={"since": "yesterday"}, headers=a_h)).status_code == 400
    assert (await client.get(f"{API}/audit", params={"actor": "nobody"}, headers=a_h)).status_code == 400

    # a sysadmin sees every organization, or one
    sys_h = bearer(await world.token(await world.user(None, Role.SYSADMIN)))
    everything = (await client.get(f"{API}/audit", params={"limit": 500}, headers=sys_h)).json()
    assert {str(a_org.id), str(b_org.id)} <= {i["organization_id"] for i in everything["items"]}
    only_b = (
        await client.get(f"{API}/audit", params={**chains, "organization_id": str(b_org.id)}, headers=sys_h)
    ).json()
    assert only_b["total"] == 1 and only_b["items"][0]["organization_id"] == str(b_org.id)

    # a regular user: 403; nobody edits or deletes an entry
    assert (await client.get(f"{API}/audit", headers=bearer(await world.token(a_user)))).status_code == 403
    assert (await client.get(f"{API}/audit/export", headers=bearer(await world.token(a_user)))).status_code == 403
    entry_id = mine["items"][0]["id"]
    before = [(e.id, e.action, e.summary) for e in await entries(sessions)]
    for method in ("PATCH", "DELETE", "PUT"):
        r = await client.request(method, f"{API}/audit/{entry_id}", headers=a_h, json={})
        assert r.status_code in (404, 405), (method, r.status_code)
    for method in ("POST", "DELETE"):
        assert (await client.request(method, f"{API}/audit", headers=sys_h, json={})).status_code == 405
    assert [(e.id, e.action, e.summary) for e in await entries(sessions)] == before


async def test_audit_page_filters_export_and_tenancy(
    client: Client, world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a_org, b_org = await world.org(), await world.org()
    a_admin, b_admin = await world.user(a_org, Role.ORG_ADMIN), await world.user(b_org, Role.ORG_ADMIN)
    for admin, name in ((a_admin, "alpha-chain"), (b_admin, "bravo-chain")):
        h = bearer(await world.token(admin))
        assert (
            await client.post(f"{API}/servicechains", json={"name": name, "services": ["log"]}, headers=h)
        ).is_success
    [b_entry] = await entries(sessions, organization_id=b_org.id, target_type="servicechain")

    assert (await login(client, a_admin.email)).status_code == 303
    page = await client.get("/audit")
    assert page.status_code == 200
    assert "servicechain.created" in page.text and "auth.login" in page.text
    assert str(b_entry.id) not in page.text and str(b_admin.id) not in page.text
    assert "/audit/export" in page.text
    filtered = await client.get("/audit", params={"action": "auth.login"})
    assert "servicechain.created" not in filtered.text and "auth.login" in filtered.text
    bad = await client.get("/audit", params={"since": "someday", "actor": "x"})
    assert bad.status_code == 200 and "Give a date like" in bad.text and "An actor is the id" in bad.text
    export = await client.get("/audit/export", params={"organization_id": str(b_org.id)})
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert rows and {r["organization_id"] for r in rows} == {str(a_org.id)}

    # a regular user is refused the page
    member = await world.user(a_org, Role.USER)
    assert (await login(client, member.email)).status_code == 303
    assert (await client.get("/audit")).status_code == 403
    assert (await client.get("/audit/export")).status_code == 403

    # a sysadmin sees both organizations
    sysadmin = await world.user(None, Role.SYSADMIN)
    assert (await login(client, sysadmin.email)).status_code == 303
    everything = await client.get("/audit", params={"target_type": "servicechain"})
    assert everything.status_code == 200 and str(a_org.id) in everything.text and str(b_org.id) in everything.text


async def test_changes_made_on_the_pages_are_recorded_with_the_signed_in_user(
    client: Client, world: World, sessions: async_sessionmaker[AsyncSession]
) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    h = bearer(await world.token(admin))
    chain_id = (await client.post(f"{API}/servicechains", json={"name": "c", "services": ["log"]}, headers=h)).json()[
        "id"
    ]
    contact_id = (
        await client.post(f"{API}/contacts", json={"first_name": "Bo", "phone": "+447911123457"}, headers=h)
    ).json()["id"]
    assert (await login(client, admin.email)).status_code == 303

    r = await post_form(
        client, "/settings/default-servicechain", {"default_servicechain_id": chain_id}, page="/settings"
    )
    assert r.status_code in (200, 303), r.text
    by(await one(sessions, "organization.default_chain_changed", org.id), admin, org.id)
    page = f"/contacts/{contact_id}"
    assert (await post_form(client, f"{page}/opt-out", {}, page=page)).status_code in (200, 303)
    assert (await post_form(client, f"{page}/opt-in", {}, page=page)).status_code in (200, 303)
    by(await one(sessions, "contact.opted_out", contact_id), admin, org.id)
    by(await one(sessions, "contact.opted_in", contact_id), admin, org.id)
