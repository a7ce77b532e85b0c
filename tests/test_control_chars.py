"""Control characters (NUL first: PostgreSQL refuses it in text) are refused in every text field of every
request schema, in the page forms and in the CSV import: a 422 naming the field, never a 500, nothing
stored. Multi-line text (message content, contact notes) keeps tabs and line breaks."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.config import Settings
from app.contacts.models import Category, Contact
from app.messaging.models import Message, Servicechain
from app.tenants.models import AccessToken, ApiClient, Organization, Role, User
from app.textfields import LINE_RULE, TEXT_RULE, VISIBLE_LINE_RULE, control_char_problem, explain
from tests.conftest import World, bearer
from tests.test_web_pages import csrf, login

API = "/api/v1"
BAD = ["\x00", "\x07", "\x1b", "\x7f", "\x85"]  # NUL, BEL, ESC, DEL, a C1 control
LINE_BREAKS = ["\n", "\r"]
STORED = (Organization, User, ApiClient, AccessToken, Contact, Category, Servicechain, Message)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Own queues: an accepted message is enqueued where no other test's worker takes it."""
    return dataclasses.replace(
        settings, redis=dataclasses.replace(settings.redis, queue_prefix=f"tc{uuid.uuid4().hex[:10]}")
    )


def test_the_rules() -> None:
    for char in BAD:
        assert control_char_problem(f"a{char}b") and control_char_problem(f"a{char}b", multiline=True)
    for char in [*LINE_BREAKS, "\t"]:
        assert control_char_problem(f"a{char}b") and control_char_problem(f"a{char}b", multiline=True) is None
    assert "U+0007" in (control_char_problem("\x07") or "")
    assert control_char_problem("Zoë — ünïcode ✓ 😀") is None
    assert explain("Expected `str` of length <= 5") is None


@dataclass
class Ctx:
    client: AsyncTestClient[Any]
    world: World
    ids: dict[str, str]
    headers: dict[str, dict[str, str]]

    async def counts(self) -> list[int]:
        async with self.world.sessions() as session:
            return [int(await session.scalar(select(func.count()).select_from(m)) or 0) for m in STORED]


@pytest.fixture
async def ctx(client: AsyncTestClient[Any], world: World) -> Ctx:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    user = await world.user(org, Role.USER)
    sysadmin = await world.user(None, Role.SYSADMIN)
    headers = {
        "admin": bearer(await world.token(admin)),
        "sysadmin": bearer(await world.token(sysadmin)),
    }
    async with world.sessions() as session:
        category = Category(organization_id=org.id, name="Friends")
        contact = Contact(organization_id=org.id, first_name="Ada", email="ada@example.com")
        chain = Servicechain(organization_id=org.id, name="Main", services=["log"])
        session.add_all([category, contact, chain])
        await session.commit()
    ids = {
        "org": str(org.id),
        "user": str(user.id),
        "category": str(category.id),
        "contact": str(contact.id),
        "chain": str(chain.id),
    }
    return Ctx(client, world, ids, headers)


@dataclass(frozen=True)
class Endpoint:
    id: str
    method: str
    path: str
    caller: str
    valid: Callable[[dict[str, str]], dict[str, Any]]
    lines: tuple[str, ...] = ()  # one-line text fields
    texts: tuple[str, ...] = ()  # multi-line text fields
    lists: tuple[str, ...] = ()  # lists of one-line text

    def url(self, ids: dict[str, str]) -> str:
        return API + self.path.format(**ids)


def _u(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


ENDPOINTS = [
    Endpoint("create-org", "POST", "/organizations", "sysadmin", lambda i: {"name": _u("Org ")}, ("name",)),
    Endpoint("patch-org", "PATCH", "/organizations/{org}", "sysadmin", lambda i: {"name": _u("Org ")}, ("name",)),
    Endpoint(
        "create-user",
        "POST",
        "/users",
        "admin",
        lambda i: {"email": f"{_u('u')}@example.com", "name": "New Person", "password": "long enough pw"},
        ("email", "name", "password"),
    ),
    Endpoint(
        "patch-user",
        "PATCH",
        "/users/{user}",
        "admin",
        lambda i: {"email": f"{_u('u')}@example.com", "name": "Renamed", "password": "another long pw"},
        ("email", "name", "password"),
    ),
    Endpoint(
        "create-client",
        "POST",
        "/clients",
        "admin",
        lambda i: {"name": "crm", "scopes": ["contacts:read"]},
        ("name",),
        lists=("scopes",),
    ),
    Endpoint(
        "create-token",
        "POST",
        "/tokens",
        "admin",
        lambda i: {"name": "cli", "scopes": ["contacts:read"]},
        ("name",),
        lists=("scopes",),
    ),
    Endpoint(
        "create-category",
        "POST",
        "/categories",
        "admin",
        lambda i: {"name": _u("Cat "), "description": "Close friends"},
        ("name", "description"),
    ),
    Endpoint(
        "patch-category",
        "PATCH",
        "/categories/{category}",
        "admin",
        lambda i: {"name": _u("Cat "), "description": "Close friends"},
        ("name", "description"),
    ),
    *[
        Endpoint(
            name,
            method,
            path,
            "admin",
            lambda i: {
                "title": "Dr",
                "first_name": "Grace",
                "surname": "Hopper",
                "phone": "+1 202 555 0143",
                "email": f"{_u('g')}@example.com",
                "telegram_chat_id": "12345",
                "notes": "Met at\r\n\tthe conference",
            },
            ("title", "first_name", "surname", "phone", "email", "telegram_chat_id"),
            ("notes",),
        )
        for name, method, path in (
            ("create-contact", "POST", "/contacts"),
            ("patch-contact", "PATCH", "/contacts/{contact}"),
        )
    ],
    *[
        Endpoint(
            name,
            method,
            path,
            "admin",
            lambda i: {"name": _u("Chain "), "services": ["log"], "description": "Tries log, that is all."},
            ("name", "description"),
            lists=("services",),
        )
        for name, method, path in (
            ("create-chain", "POST", "/servicechains"),
            ("patch-chain", "PATCH", "/servicechains/{chain}"),
        )
    ],
    Endpoint(
        "send-message",
        "POST",
        "/messages",
        "admin",
        lambda i: {
            "contact_id": i["contact"],
            "servicechain_id": i["chain"],
            "content": "Hello {{ first_name }},\n\tbye\r\n",
        },
        texts=("content",),
    ),
    Endpoint(
        "preview-message",
        "POST",
        "/messages/preview",
        "admin",
        lambda i: {"contact_id": i["contact"], "content": "Hello {{ first_name }},\n\tbye"},
        texts=("content",),
    ),
]


def bad_bodies(endpoint: Endpoint, ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, field, body) for each refused character in each text field."""
    out = []
    for field in endpoint.lines + endpoint.texts + endpoint.lists:
        chars = BAD + (LINE_BREAKS if field not in endpoint.texts else [])
        for char in chars:
            body = endpoint.valid(ids)
            if field in endpoint.lists:
                body[field] = [f"{body[field][0]}{char}"]
            else:
                body[field] = f"{body[field][:3]}{char}{body[field][3:]}"
            out.append((f"{field} with U+{ord(char):04X}", field, body))
    return out


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.id)
async def test_control_characters_are_422_with_a_field_error(ctx: Ctx, endpoint: Endpoint) -> None:
    headers = ctx.headers[endpoint.caller]
    before = await ctx.counts()
    for label, field, body in bad_bodies(endpoint, ctx.ids):
        response = await ctx.client.request(endpoint.method, endpoint.url(ctx.ids), json=body, headers=headers)
        what = f"{endpoint.id} / {label}: {response.status_code} {response.text[:300]}"
        assert response.status_code == 422, what
        assert response.headers["content-type"].startswith("application/problem+json"), what
        problem = response.json()
        messages = [e["message"] for e in problem.get("errors", []) if e["field"].split("[")[0] == field]
        assert messages, what
        # a sentence, not msgspec's regular expression
        assert "regex" not in messages[0] and messages[0] in problem["detail"], what
        if field not in ("email", "services"):  # these have patterns of their own
            assert messages[0] in (LINE_RULE, TEXT_RULE, VISIBLE_LINE_RULE), what
    assert await ctx.counts() == before
    # the valid body (multi-line where the field is multi-line) is accepted
    response = await ctx.client.request(
        endpoint.method, endpoint.url(ctx.ids), json=endpoint.valid(ctx.ids), headers=headers
    )
    assert response.status_code in (200, 201), response.text


async def test_multiline_message_content_is_kept(ctx: Ctx) -> None:
    content = "Dear {{ first_name }},\r\n\n\tyour order has shipped.\nRegards"
    body = {"contact_id": ctx.ids["contact"], "servicechain_id": ctx.ids["chain"], "content": content}
    response = await ctx.client.post(f"{API}/messages", json=body, headers=ctx.headers["admin"])
    assert response.status_code == 201, response.text
    # rendered: the template engine writes line breaks as \n
    rendered = "Dear Ada,\n\n\tyour order has shipped.\nRegards"
    assert response.json()["content"] == rendered
    async with ctx.world.sessions() as session:
        stored = await session.scalar(select(Message.content).where(Message.id == uuid.UUID(response.json()["id"])))
    assert stored == rendered


# ---------------------------------------------------------------- page forms


async def test_page_forms_refuse_control_characters(client: AsyncTestClient[Any], world: World) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    async with world.sessions() as session:
        contact = Contact(organization_id=org.id, first_name="Ada", email="ada@example.com")
        chain = Servicechain(organization_id=org.id, name="Main", services=["log"])
        session.add_all([contact, chain])
        await session.commit()
    assert (await login(client, admin.email)).status_code == 303
    forms = [
        ("/categories", "/categories", {"name": "Fri\x00ends"}, "name"),
        ("/categories", "/categories", {"name": "Friends", "description": "a\x07b"}, "description"),
        ("/categories", "/categories", {"name": "Friends", "description": "two\nlines"}, "description"),
        ("/servicechains/new", "/servicechains", {"name": "Ma\x00in", "services": "log"}, "name"),
        ("/contacts/new", "/contacts", {"first_name": "Gr\x1bace", "email": "g@example.com"}, "first_name"),
        ("/contacts/new", "/contacts", {"first_name": "Grace", "notes": "nul \x00 here"}, "notes"),
        ("/contacts/new", "/contacts", {"first_name": "Two\nlines", "email": "g@example.com"}, "first_name"),
        ("/users", "/users", {"name": "Ev\x00e", "email": "eve@example.com", "password": "long enough pw"}, "name"),
        ("/tokens", "/tokens", {"name": "cli\x00", "scopes": "contacts:read", "expires_in_days": "7"}, "name"),
        (
            "/messages/new",
            "/messages",
            {"contact_id": str(contact.id), "servicechain_id": str(chain.id), "content": "Hi\x00"},
            "content",
        ),
        ("/messages/new", "/messages/preview", {"contact_id": str(contact.id), "content": "Hi\x07"}, "content"),
    ]
    async with world.sessions() as session:
        before = [int(await session.scalar(select(func.count()).select_from(m)) or 0) for m in STORED]
    for page, action, data, field in forms:
        token = await csrf(client, page)
        for headers in ({}, {"HX-Request": "true"}):
            response = await client.post(
                action, data={**data, "_csrf_token": token}, headers=headers, follow_redirects=False
            )
            what = f"POST {action} {field} {headers}: {response.status_code} {response.text[:300]}"
            assert response.status_code == 422, what
            assert f"“{field}”" in response.text, what
            assert "control character" in response.text or "line break" in response.text, what
    async with world.sessions() as session:
        after = [int(await session.scalar(select(func.count()).select_from(m)) or 0) for m in STORED]
    assert after == before
    # multi-line content from the compose page is still sent
    token = await csrf(client, "/messages/new")
    content = "Hello,\r\n\tsee you\r\nsoon"
    data = {"contact_id": str(contact.id), "servicechain_id": str(chain.id), "content": content}
    sent = await client.post("/messages", data={**data, "_csrf_token": token}, follow_redirects=False)
    assert sent.status_code == 303, sent.text[:300]
    async with world.sessions() as session:
        stored = await session.scalar(select(Message.content).where(Message.organization_id == org.id))
    assert stored == "Hello,\n\tsee you\nsoon"


# ---------------------------------------------------------------- CSV import


async def test_csv_import_refuses_control_characters(client: AsyncTestClient[Any], world: World) -> None:
    org = await world.org()
    headers = bearer(await world.token(await world.user(org, Role.USER)))

    async def upload(raw: bytes) -> Any:
        files = {"file": ("c.csv", raw, "text/csv")}
        return await client.post(f"{API}/contacts/import", files=files, headers=headers)

    nul = await upload(b"first_name,email\nA\x00da,ada@example.com\n")
    assert 400 <= nul.status_code < 500, nul.text
    raw = (
        b"first_name,surname,email,notes,categories\n"
        b"Gr\x07ace,Hopper,grace@example.com,,\n"
        b"Alan,Tu\x1bring,alan@example.com,,\n"
        b"Kath,Johnson,kath@example.com,a\x7fb,\n"
        b"Dot,Vaughan,dot@example.com,,Bad\x07Cat\n"
        b'Ada,Lovelace,ada@example.com,"first line\r\n\tsecond line",Good\n'
    )
    report = await upload(raw)
    assert report.status_code == 200, report.text
    body = report.json()
    assert (body["created"], body["rejected"]) == (1, 4), body
    columns = {error["row"]: set(error["errors"]) for error in body["errors"]}
    assert columns == {2: {"first_name"}, 3: {"surname"}, 4: {"notes"}, 5: {"categories"}}, body
    async with world.sessions() as session:
        notes = await session.scalar(select(Contact.notes).where(Contact.organization_id == org.id))
    assert notes == "first line\r\n\tsecond line"
