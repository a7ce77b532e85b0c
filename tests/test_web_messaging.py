"""The messaging pages: contacts (with CSV import/export), categories, services and credentials,
servicechains, compose with preview, the message log and the live message detail."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from app.config import Settings
from app.contacts.models import Category, Contact
from app.messaging.models import Message, MessageState, Servicechain
from app.servicehost.models import ServiceCredential, ServiceStatus
from app.tenants.models import Organization, Plan, Role
from tests.conftest import World
from tests.helpers import free_port
from tests.test_web_pages import csrf, login, post_form

Client = AsyncTestClient[Litestar]
HX = {"HX-Request": "true"}
SMTP_PASSWORD = "hunter2-secret-Zq9"
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Own queues (nothing left behind for other tests' workers) and local SMTP servers allowed."""
    return dataclasses.replace(
        settings,
        redis=dataclasses.replace(settings.redis, queue_prefix=f"tw{uuid.uuid4().hex[:10]}"),
        security=dataclasses.replace(settings.security, allow_private_targets=True),
    )


class Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data == (b"mailer", SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_port() -> Iterator[int]:
    """A local SMTP server that wants the user ``mailer`` and :data:`SMTP_PASSWORD`."""
    port = free_port()
    controller = Controller(
        Sink(), hostname="127.0.0.1", port=port, authenticator=authenticate, auth_required=True, auth_require_tls=False
    )
    controller.start()
    yield port
    controller.stop()


async def member(world: World, role: Role = Role.USER, **org_fields: Any) -> tuple[Organization, Any]:
    org = await world.org(**org_fields)
    return org, await world.user(org, role)


async def add_contact(world: World, org: Organization, **fields: Any) -> Contact:
    async with world.sessions() as session:
        contact = Contact(organization_id=org.id, **{"first_name": "Steve", "email": "steve@example.com", **fields})
        session.add(contact)
        await session.commit()
        return contact


async def add_chain(world: World, org: Organization, services: list[str], name: str = "Main") -> Servicechain:
    async with world.sessions() as session:
        chain = Servicechain(organization_id=org.id, name=name, services=services)
        session.add(chain)
        await session.commit()
        return chain


async def hx_post(client: Client, path: str, data: dict[str, Any], page: str, target: str | None = None) -> Any:
    token = await csrf(client, page)
    headers = {**HX, "x-csrftoken": token, **({"HX-Target": target} if target else {})}
    return await client.post(path, data=data, headers=headers)


# ---------------------------------------------------------------- roles


async def test_pages_render_for_members_and_refuse_others(client: Client, world: World) -> None:
    org, user = await member(world)
    admin = await world.user(org, Role.ORG_ADMIN)
    root = await world.user(None, Role.SYSADMIN)
    pages = [
        "/contacts",
        "/contacts/new",
        "/contacts/import",
        "/categories",
        "/services",
        "/services/smtp",
        "/servicechains",
        "/messages",
        "/messages/new",
    ]
    assert (await client.get("/contacts", follow_redirects=False)).headers["location"] == "/login?next=/contacts"
    for who in (user, admin):
        await login(client, who.email)
        for path in pages:
            response = await client.get(path)
            assert response.status_code == 200, (who.role, path, response.text[:300])
            assert "hx-request" in response.headers["vary"].lower()
        home = await client.get("/")
        assert 'href="/contacts"' in home.text and 'href="/messages"' in home.text
        await post_form(client, "/logout", {}, page="/")
    await login(client, user.email)
    assert (await client.get("/servicechains/new")).status_code == 403
    await post_form(client, "/logout", {}, page="/")
    await login(client, root.email)
    for path in ("/contacts", "/messages", "/servicechains", "/services"):
        response = await client.get(path)
        assert response.status_code == 403 and "sysadmins have none" in response.text, path


async def test_cross_tenant_ids_answer_404_pages(client: Client, world: World) -> None:
    _, user = await member(world, Role.ORG_ADMIN)
    theirs = await world.org()
    contact = await add_contact(world, theirs)
    chain = await add_chain(world, theirs, ["log"])
    async with world.sessions() as session:
        category = Category(organization_id=theirs.id, name="Theirs")
        message = Message(organization_id=theirs.id, contact_id=contact.id, content="secret", route=["log"])
        session.add_all([category, message])
        await session.commit()
    await login(client, user.email)
    for path in (
        f"/contacts/{contact.id}",
        f"/contacts/{contact.id}/edit",
        f"/messages/{message.id}",
        f"/messages/new?contact_id={contact.id}",
        f"/servicechains/{chain.id}",
        f"/servicechains/{chain.id}/edit",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "Page not found" in response.text and "secret" not in response.text
    for path, data in (
        (f"/contacts/{contact.id}/edit", {"first_name": "Hacked"}),
        (f"/contacts/{contact.id}/remove", {}),
        (f"/categories/{category.id}/rename", {"name": "Hacked"}),
        (f"/categories/{category.id}/remove", {}),
        (f"/servicechains/{chain.id}/edit", {"name": "Hacked", "services": "log"}),
        (f"/servicechains/{chain.id}/remove", {}),
        ("/messages", {"contact_id": str(contact.id), "content": "Hi"}),
    ):
        response = await post_form(client, path, data, page="/contacts")
        assert response.status_code == 404, path
    fragment = await hx_post(client, f"/contacts/{contact.id}/remove", {}, "/contacts")
    assert fragment.status_code == 404 and fragment.headers["hx-retarget"] == "#flashes"
    preview = await hx_post(
        client, "/messages/preview", {"contact_id": str(contact.id), "content": "Hi"}, "/messages/new"
    )
    assert "Steve" not in preview.text and "Choose a contact" in preview.text
    async with world.sessions() as session:
        still = await session.get(Contact, contact.id)
        assert still is not None and still.first_name == "Steve"
        assert (await session.get(Servicechain, chain.id)) is not None
        assert (await session.get(Category, category.id)).name == "Theirs"  # type: ignore[union-attr]


# ---------------------------------------------------------------- contacts and categories


async def test_contacts_create_validate_search_edit_delete(client: Client, world: World) -> None:
    org, user = await member(world)
    chain = await add_chain(world, org, ["log"])
    await login(client, user.email)
    assert "No contacts yet" in (await client.get("/contacts")).text
    bad = await post_form(
        client, "/contacts", {"first_name": "Ada", "phone": "12345", "email": "nope"}, page="/contacts/new"
    )
    assert bad.status_code == 422
    assert 'id="e-phone"' in bad.text and "international format" in bad.text
    assert 'id="e-email"' in bad.text and "not a valid e-mail address" in bad.text
    assert 'value="Ada"' in bad.text  # what was typed stays
    empty = await post_form(client, "/contacts", {}, page="/contacts/new")
    assert empty.status_code == 422 and "A contact needs a name" in empty.text

    token = await csrf(client, "/contacts/new")
    created = await client.post(
        "/contacts",
        data={
            "first_name": "Ada",
            "surname": "Lovelace",
            "phone": "+44 20 7946 0958",
            "email": "ADA@Example.com",
            "servicechain_id": str(chain.id),
            "_csrf_token": token,
        },
        follow_redirects=False,
    )
    assert created.status_code == 303
    detail = await client.get(created.headers["location"])
    assert "Ada Lovelace" in detail.text and "+442079460958" in detail.text and "ada@example.com" in detail.text
    assert "Main" in detail.text and "No messages yet" in detail.text and "Send a message" in detail.text
    await add_contact(world, org, first_name="Grace", email="grace@example.com")

    listing = await client.get("/contacts?q=love")
    assert "Ada Lovelace" in listing.text and "Grace" not in listing.text
    by_phone = await client.get("/contacts?q=7946 0958", headers={**HX, "HX-Target": "contact-list"})
    assert by_phone.text.lstrip().startswith('<section id="contact-list"') and "Ada Lovelace" in by_phone.text
    assert "<html" not in by_phone.text and "/contacts/export?q=7946+0958" in by_phone.text
    nothing = await client.get("/contacts?q=zzz")
    assert "No contacts match" in nothing.text

    async with world.sessions() as session:
        ada = (await session.scalars(select(Contact).where(Contact.first_name == "Ada"))).one()
    edit = await client.get(f"/contacts/{ada.id}/edit")
    assert 'value="Lovelace"' in edit.text and "selected" in edit.text
    bad_edit = await post_form(
        client, f"/contacts/{ada.id}/edit", {"first_name": "Ada", "phone": "+1 555"}, page=f"/contacts/{ada.id}/edit"
    )
    assert bad_edit.status_code == 422 and 'id="e-phone"' in bad_edit.text
    saved = await post_form(
        client,
        f"/contacts/{ada.id}/edit",
        {"first_name": "Augusta", "surname": "Lovelace", "email": "ada@example.com", "opted_out": "on"},
        page=f"/contacts/{ada.id}/edit",
    )
    assert saved.status_code == 303
    page = await client.get(f"/contacts/{ada.id}")
    assert "Augusta Lovelace is saved." in page.text and "Opted out" in page.text
    async with world.sessions() as session:
        row = await session.get(Contact, ada.id)
        assert row is not None and row.opted_out and row.phone is None and row.servicechain_id is None

    removed = await hx_post(client, f"/contacts/{ada.id}/remove", {}, "/contacts")
    assert removed.status_code == 200 and "<tr" not in removed.text and "has been deleted" in removed.text
    async with world.sessions() as session:
        assert await session.get(Contact, ada.id) is None


async def test_categories_create_rename_delete_and_filter(client: Client, world: World) -> None:
    org, user = await member(world)
    await login(client, user.email)
    assert "No categories yet" in (await client.get("/categories")).text
    assert (await post_form(client, "/categories", {"name": "Customers"})).status_code == 303
    assert (await post_form(client, "/categories", {"name": "Staff"})).status_code == 303
    dup = await post_form(client, "/categories", {"name": "customers"})
    assert dup.status_code == 422 and "already exists" in dup.text
    blank = await post_form(client, "/categories", {"name": " "})
    assert blank.status_code == 422 and 'aria-invalid="true"' in blank.text
    async with world.sessions() as session:
        cats = {c.name: c for c in await session.scalars(select(Category).where(Category.organization_id == org.id))}
    await add_contact(world, org, first_name="Ann", email="ann@example.com")
    token = await csrf(client, "/contacts/new")
    await client.post(
        "/contacts", data={"first_name": "Bob", "category_ids": [str(cats["Customers"].id)], "_csrf_token": token}
    )
    listing = await client.get(f"/contacts?category_id={cats['Customers'].id}")
    assert "Bob" in listing.text and "Ann" not in listing.text

    row = await hx_post(client, f"/categories/{cats['Staff'].id}/rename", {"name": "Team"}, "/categories")
    assert row.status_code == 200 and row.text.lstrip().startswith(f'<tr id="category-{cats["Staff"].id}"')
    assert "Team" in row.text and 'hx-swap-oob="true"' in row.text
    clash = await hx_post(client, f"/categories/{cats['Staff'].id}/rename", {"name": "Customers"}, "/categories")
    assert clash.status_code == 422 and "already exists" in clash.text and "<tr" in clash.text
    page = await client.get("/categories")
    assert "Team" in page.text and re.search(r'category_id=[^"]+">1</a>', page.text)
    gone = await hx_post(client, f"/categories/{cats['Customers'].id}/remove", {}, "/categories")
    assert gone.status_code == 200 and "its contacts are kept" in gone.text
    async with world.sessions() as session:
        assert await session.get(Category, cats["Customers"].id) is None
        assert (await session.scalars(select(Contact).where(Contact.first_name == "Bob"))).one()


async def test_csv_import_and_export_through_the_page(client: Client, world: World) -> None:
    _, user = await member(world)
    await login(client, user.email)
    csv_text = (
        "first_name,surname,phone,email,categories\n"
        "Ann,Archer,+44 20 7946 0001,ann@example.com,Customers\n"
        "Bob,Baker,not a phone,bob@example.com,\n"
        "Cy,Cooper,,cy@example.com,Customers;Staff\n"
    )
    token = await csrf(client, "/contacts/import")
    report = await client.post(
        "/contacts/import",
        data={"_csrf_token": token, "region": ""},
        files={"file": ("people.csv", csv_text.encode(), "text/csv")},
    )
    assert report.status_code == 200, report.text[:500]
    assert re.search(r'data-testid="import-created">2<', report.text)
    assert re.search(r'data-testid="import-rejected">1<', report.text)
    assert "<code>phone</code>" in report.text and "This is not a phone number." in report.text
    again = await client.post(
        "/contacts/import",
        data={"_csrf_token": token},
        files={"file": ("people.csv", csv_text.encode(), "text/csv")},
    )
    assert re.search(r'data-testid="import-updated">2<', again.text)

    broken = await client.post(
        "/contacts/import", data={"_csrf_token": token}, files={"file": ("x.csv", b"\x00\x01binary", "text/csv")}
    )
    assert broken.status_code == 422 and 'id="e-file"' in broken.text and "binary data" in broken.text
    missing = await client.post("/contacts/import", data={"_csrf_token": token})
    assert missing.status_code == 422 and "Choose a CSV file" in missing.text
    local = await client.post(
        "/contacts/import",
        data={"_csrf_token": token, "region": "XX"},
        files={"file": ("p.csv", b"phone\n020 7946 0002\n", "text/csv")},
    )
    assert local.status_code == 422 and "Unknown region" in local.text

    export = await client.get("/contacts/export?q=archer")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    lines = export.text.strip().splitlines()
    assert lines[0].startswith("id,title,first_name") and len(lines) == 2 and "Ann" in lines[1]
    listing = await client.get("/contacts")
    assert "Ann Archer" in listing.text and "Cy Cooper" in listing.text and "Bob" not in listing.text


# ---------------------------------------------------------------- services and servicechains


async def test_org_admin_saves_and_deletes_credentials(client: Client, world: World, smtp_port: int) -> None:
    org, admin = await member(world, Role.ORG_ADMIN)
    await login(client, admin.email)
    listing = await client.get("/services")
    assert "smtp" in listing.text and "Available" in listing.text and "Missing" in listing.text
    form = await client.get("/services/smtp")
    assert 'name="host"' in form.text and 'id="f-port" name="port" type="number"' in form.text
    assert 'id="f-password" name="password" type="password"' in form.text
    assert '<select id="f-security" name="security"' in form.text and '<option value="starttls"' in form.text

    body = {
        "host": "127.0.0.1",
        "port": str(smtp_port),
        "security": "none",
        "from_address": "noreply@example.com",
        "username": "mailer",
        "password": SMTP_PASSWORD,
    }
    missing = await post_form(
        client, "/services/smtp/credentials", {**body, "host": "", "port": "many"}, page="/services/smtp"
    )
    assert missing.status_code == 422
    assert 'id="e-host"' in missing.text and 'id="e-port"' in missing.text and "Enter a number." in missing.text
    wrong = await post_form(
        client, "/services/smtp/credentials", {**body, "password": "not-the-password"}, page="/services/smtp"
    )
    assert wrong.status_code == 422 and "flash-error" in wrong.text and "refused" in wrong.text
    assert "not-the-password" not in wrong.text  # a typed secret is never sent back
    assert 'value="127.0.0.1"' in wrong.text and 'value="mailer"' in wrong.text
    closed = await post_form(
        client, "/services/smtp/credentials", {**body, "port": str(free_port())}, page="/services/smtp"
    )
    assert closed.status_code == 422 and "flash-error" in closed.text

    saved = await post_form(client, "/services/smtp/credentials", body, page="/services/smtp")
    assert saved.status_code == 303
    page = await client.get("/services/smtp")
    assert "checked and saved" in page.text and "Delete credentials" in page.text
    assert SMTP_PASSWORD not in page.text and "mailer" not in page.text  # stored values are never shown
    assert "Saved" in (await client.get("/services")).text
    async with world.sessions() as session:
        row = (
            await session.scalars(select(ServiceCredential).where(ServiceCredential.organization_id == org.id))
        ).one()
        assert SMTP_PASSWORD not in str(row.ciphertext)

    log = await client.get("/services/log")
    assert "needs no credentials" in log.text and 'name="host"' not in log.text
    async with world.sessions() as session:  # as a failed health check records it
        await session.execute(
            update(ServiceStatus)
            .where(ServiceStatus.name == "webhook")
            .values(status="blacklisted", reason="ImportError: no module named httpx")
        )
        await session.commit()
    health = await client.get("/services")
    row = health.text[health.text.index('id="service-webhook"') :]
    assert "Blacklisted" in row[:1500] and "ImportError: no module named httpx" in row[:1500]
    assert "Blacklisted" in (await client.get("/services/webhook")).text
    deleted = await post_form(client, "/services/smtp/credentials/remove", {}, page="/services/smtp")
    assert deleted.status_code == 303
    assert "credentials are deleted" in (await client.get("/services/smtp")).text
    assert (await client.get("/services/nope")).status_code == 404


async def test_users_cannot_save_credentials_or_edit_chains(client: Client, world: World) -> None:
    org, user = await member(world)
    chain = await add_chain(world, org, ["log"])
    await login(client, user.email)
    page = await client.get("/services/smtp")
    assert "Only organization admins can change them." in page.text and 'name="host"' not in page.text
    chains = await client.get("/servicechains")
    assert "Main" in chains.text and "New servicechain" not in chains.text and "/remove" not in chains.text
    detail = await client.get(f"/servicechains/{chain.id}")
    assert detail.status_code == 200 and "<code>log</code>" in detail.text and "/edit" not in detail.text
    creds = {"host": "127.0.0.1", "port": "25", "security": "none", "from_address": "a@example.com"}
    for path, data in (
        ("/services/smtp/credentials", creds),
        ("/services/smtp/credentials/remove", {}),
        ("/servicechains", {"name": "Mine", "services": "log"}),
        (f"/servicechains/{chain.id}/edit", {"name": "Renamed", "services": "log"}),
        (f"/servicechains/{chain.id}/remove", {}),
    ):
        response = await post_form(client, path, data, page="/services")
        assert response.status_code == 403, path
    async with world.sessions() as session:
        assert (await session.get(Servicechain, chain.id)).name == "Main"  # type: ignore[union-attr]
        assert not (await session.scalars(select(ServiceCredential))).all()


async def test_chain_editor_orders_services_and_refuses_deleting_a_chain_in_use(client: Client, world: World) -> None:
    org, admin = await member(world, Role.ORG_ADMIN)
    await login(client, admin.email)
    empty_list = await client.get("/servicechains")
    assert "No servicechains yet" in empty_list.text and 'href="/servicechains/new"' in empty_list.text
    # Without htmx: every editor button posts the whole form and gets the page back.
    added = await post_form(
        client, "/servicechains", {"name": "Fallback", "op": "add", "add_service": "smtp"}, page="/servicechains/new"
    )
    assert added.status_code == 200 and '<input type="hidden" name="services" value="smtp">' in added.text
    token = await csrf(client, "/servicechains/new")
    hx = {**HX, "HX-Target": "chain-editor", "x-csrftoken": token}
    fragment = await client.post(
        "/servicechains", data={"services": ["smtp"], "op": "add", "add_service": "log"}, headers=hx
    )
    assert fragment.text.lstrip().startswith('<fieldset id="chain-editor"') and "<html" not in fragment.text
    assert re.findall(r'name="services" value="(\w+)"', fragment.text) == ["smtp", "log"]
    up = await client.post("/servicechains", data={"services": ["smtp", "log"], "op": "up:1"}, headers=hx)
    assert re.findall(r'name="services" value="(\w+)"', up.text) == ["log", "smtp"]
    down = await client.post("/servicechains", data={"services": ["log", "smtp"], "op": "down:0"}, headers=hx)
    assert re.findall(r'name="services" value="(\w+)"', down.text) == ["smtp", "log"]
    removed = await client.post("/servicechains", data={"services": ["smtp", "log"], "op": "remove:0"}, headers=hx)
    assert re.findall(r'name="services" value="(\w+)"', removed.text) == ["log"]

    empty = await post_form(client, "/servicechains", {"name": "Nothing"}, page="/servicechains/new")
    assert empty.status_code == 422 and "Add at least one service." in empty.text
    unknown = await post_form(
        client, "/servicechains", {"name": "Odd", "services": "carrier-pigeon"}, page="/servicechains/new"
    )
    assert unknown.status_code == 422 and "Unknown service(s): carrier-pigeon" in unknown.text
    saved = await client.post(
        "/servicechains",
        data={"name": "Fallback", "services": ["smtp", "log"], "op": "save", "_csrf_token": token},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    detail = await client.get(saved.headers["location"])
    assert "smtp → log" in detail.text and re.search(r"<code>smtp</code>.*<code>log</code>", detail.text, re.S)
    dup = await post_form(client, "/servicechains", {"name": "Fallback", "services": "log"}, page="/servicechains/new")
    assert dup.status_code == 422 and "already exists" in dup.text

    async with world.sessions() as session:
        chain = (await session.scalars(select(Servicechain).where(Servicechain.organization_id == org.id))).one()
    edit = await client.post(
        f"/servicechains/{chain.id}/edit",
        data={"name": "Fallback", "services": ["log", "smtp"], "_csrf_token": token},
        follow_redirects=False,
    )
    assert edit.status_code == 303
    await add_contact(world, org, servicechain_id=chain.id)
    refused = await client.post(f"/servicechains/{chain.id}/remove", headers={**HX, "x-csrftoken": token})
    assert refused.status_code == 409 and refused.headers["hx-retarget"] == "#flashes"
    assert "Contacts use this servicechain" in refused.text
    plain = await post_form(client, f"/servicechains/{chain.id}/remove", {}, page="/servicechains")
    assert plain.status_code == 303
    assert "was not deleted" in (await client.get(plain.headers["location"])).text
    async with world.sessions() as session:
        kept = await session.get(Servicechain, chain.id)
        assert kept is not None and kept.services == ["log", "smtp"]


# ---------------------------------------------------------------- compose, log and detail


async def test_compose_preview_send_and_watch(client: Client, world: World) -> None:
    org, user = await member(world)
    chain = await add_chain(world, org, ["log"])
    contact = await add_contact(world, org, first_name="Steve", title="Mr", servicechain_id=chain.id)
    await login(client, user.email)
    compose = await client.get(f"/messages/new?contact_id={contact.id}")
    assert compose.status_code == 200 and f'<option value="{contact.id}" selected' in compose.text
    assert (
        "The contact&#39;s default chain (Main)" in compose.text or "The contact's default chain (Main)" in compose.text
    )
    assert 'hx-trigger="keyup changed delay:400ms' in compose.text
    key = re.search(r'name="idempotency_key" value="([^"]+)"', compose.text)
    assert key

    ok = await hx_post(
        client,
        "/messages/preview",
        {"contact_id": str(contact.id), "content": "Hi {{ first_name }}!"},
        f"/messages/new?contact_id={contact.id}",
    )
    assert ok.text.lstrip().startswith('<div id="preview"') and "Hi Steve!" in ok.text
    bad = await hx_post(
        client, "/messages/preview", {"contact_id": str(contact.id), "content": "Hi {{ nickname }}"}, "/messages/new"
    )
    assert "Unknown template variable(s): nickname" in bad.text and "inline-error" in bad.text
    options = await client.get("/messages/contact-options?contact_q=stev", headers=HX)
    assert f'<option value="{contact.id}"' in options.text

    form = {"contact_id": str(contact.id), "servicechain_id": "", "idempotency_key": key.group(1)}
    refused = await post_form(client, "/messages", {**form, "content": "Hi {{ nickname }}"}, page="/messages/new")
    assert refused.status_code == 422 and 'id="e-content"' in refused.text and "nickname" in refused.text
    empty = await post_form(client, "/messages", {**form, "content": "  "}, page="/messages/new")
    assert empty.status_code == 422 and "Write the message." in empty.text
    sent = await post_form(
        client, "/messages", {**form, "content": "Hello {{ title }} {{ first_name }}"}, page="/messages/new"
    )
    assert sent.status_code == 303 and sent.headers["location"].startswith("/messages/")
    message_id = sent.headers["location"].rsplit("/", 1)[1]
    detail = await client.get(sent.headers["location"])
    assert detail.status_code == 200 and "Hello Mr Steve" in detail.text and "accepted" in detail.text
    replay = await post_form(
        client, "/messages", {**form, "content": "Hello {{ title }} {{ first_name }}"}, page="/messages/new"
    )
    assert replay.headers["location"] == sent.headers["location"]  # a double submit sends once
    assert 'hx-trigger="every 1s"' in detail.text and 'id="message-status"' in detail.text
    live = await client.get(sent.headers["location"], headers={**HX, "HX-Target": "message-status"})
    assert live.text.lstrip().startswith('<section id="message-status"') and 'hx-trigger="every 1s"' in live.text
    async with world.sessions() as session:
        await session.execute(
            update(Message).where(Message.id == uuid.UUID(message_id)).values(state=MessageState.SENT, service="log")
        )
        await session.commit()
    final = await client.get(sent.headers["location"], headers={**HX, "HX-Target": "message-status"})
    assert 'data-state="MSG_SENT"' in final.text and "hx-trigger" not in final.text  # polling stops

    log = await client.get("/messages")
    assert f"/messages/{message_id}" in log.text and "Hello Mr Steve" in log.text
    sent_only = await client.get("/messages?state=MSG_SENT", headers={**HX, "HX-Target": "message-list"})
    assert sent_only.text.lstrip().startswith('<section id="message-list"') and message_id in sent_only.text
    assert "No messages match" in (await client.get("/messages?state=MSG_FAILED")).text
    assert "No messages match" in (await client.get("/messages?direction=incoming")).text
    conversation = await client.get(f"/contacts/{contact.id}")
    assert "Hello Mr Steve" in conversation.text and 'data-state="MSG_SENT"' in conversation.text
    part = await client.get(f"/contacts/{contact.id}?page=1", headers={**HX, "HX-Target": "conversation"})
    assert part.text.lstrip().startswith('<section id="conversation"') and "Hello Mr Steve" in part.text

    no_chain = await add_contact(world, org, first_name="Nochain", email="nc@example.com")
    problem = await post_form(
        client, "/messages", {"contact_id": str(no_chain.id), "content": "Hi"}, page="/messages/new"
    )
    assert problem.status_code == 422 and 'id="e-servicechain_id"' in problem.text


async def test_compose_without_credits_says_so(client: Client, world: World) -> None:
    org, user = await member(world, plan=Plan.PAY_IN_ADVANCE, credits=0)
    chain = await add_chain(world, org, ["log"])
    contact = await add_contact(world, org, servicechain_id=chain.id)
    await login(client, user.email)
    response = await post_form(
        client, "/messages", {"contact_id": str(contact.id), "content": "Hi"}, page="/messages/new"
    )
    assert response.status_code == 402 and "Not enough credits" in response.text
    async with world.sessions() as session:
        assert not (await session.scalars(select(Message).where(Message.organization_id == org.id))).all()
