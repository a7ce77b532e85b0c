"""Bad input to every account endpoint of /api/v1: always a 4xx problem document, never a 500, nothing stored."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.config import Settings
from app.tenants.models import AccessToken, ApiClient, Organization, Role, User
from tests.conftest import World, bearer

API = "/api/v1"
JSON = {"Content-Type": "application/json"}


@dataclass
class Ctx:
    client: AsyncTestClient[Any]
    world: World
    org: Organization
    user: User
    headers: dict[str, dict[str, str]]
    max_body: int

    def path(self, template: str) -> str:
        return API + template.format(org=self.org.id, user=self.user.id)

    async def counts(self) -> tuple[int, ...]:
        counts = []
        async with self.world.sessions() as session:
            for model in (Organization, User, ApiClient, AccessToken):
                counts.append(int(await session.scalar(select(func.count()).select_from(model)) or 0))
        return tuple(counts)


@pytest.fixture
async def ctx(client: AsyncTestClient[Any], world: World, settings: Settings) -> Ctx:
    org = await world.org("Taken")
    admin = await world.user(org, Role.ORG_ADMIN, email="admin@example.com")
    user = await world.user(org, Role.USER, email="someone@example.com")
    sysadmin = await world.user(None, Role.SYSADMIN)
    headers = {"admin": bearer(await world.token(admin)), "sysadmin": bearer(await world.token(sysadmin))}
    return Ctx(client, world, org, user, headers, settings.server.max_body_bytes)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class BodyEndpoint:
    id: str
    method: str
    path: str
    caller: str
    valid: Callable[[], dict[str, Any]]
    wrong_types: dict[str, Any]
    name_field: str | None = "name"


BODY_ENDPOINTS = [
    BodyEndpoint(
        "create-org",
        "POST",
        "/organizations",
        "sysadmin",
        lambda: {"name": unique("Org")},
        {"name": 5, "credits": "many", "suspended": "yes"},
    ),
    BodyEndpoint(
        "patch-org", "PATCH", "/organizations/{org}", "sysadmin", lambda: {"credits": 1}, {"credits": "one"}
    ),
    BodyEndpoint(
        "add-credits",
        "POST",
        "/organizations/{org}/credits",
        "sysadmin",
        lambda: {"amount": 1},
        {"amount": [1]},
        name_field=None,
    ),
    BodyEndpoint(
        "create-user",
        "POST",
        "/users",
        "admin",
        lambda: {"email": f"{unique('u')}@example.com", "name": "New", "password": "long enough pw"},
        {"email": ["x@example.com"], "name": 1},
    ),
    BodyEndpoint(
        "patch-user", "PATCH", "/users/{user}", "admin", lambda: {"name": "Renamed"}, {"is_active": "maybe"}
    ),
    BodyEndpoint(
        "create-client",
        "POST",
        "/clients",
        "admin",
        lambda: {"name": "crm", "scopes": ["contacts:read"]},
        {"name": "crm", "scopes": "contacts:read"},
    ),
    BodyEndpoint(
        "create-token",
        "POST",
        "/tokens",
        "admin",
        lambda: {"name": "cli"},
        {"name": "cli", "expires_in_days": "ninety"},
    ),
]


def bad_bodies(endpoint: BodyEndpoint, max_body: int) -> list[tuple[str, bytes]]:
    valid = endpoint.valid()
    bodies = [
        ("malformed", b'{"name": '),
        ("trailing garbage", json.dumps(valid).encode() + b"}"),
        ("array", b"[]"),
        ("string", b'"text"'),
        ("number", b"42"),
        ("null", b"null"),
        ("not utf-8", b"\xff\xfe\xfd"),
        ("wrong types", json.dumps(endpoint.wrong_types).encode()),
        ("unknown field", json.dumps({**valid, "unknown_field": 1}).encode()),
        ("deeply nested", b'{"name": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"),
        (
            "huge number",
            json.dumps({**valid, **{k: 10**30 for k, v in valid.items() if isinstance(v, int)}}).encode()
            if any(isinstance(v, int) for v in valid.values())
            else b'{"name": 1e999}',
        ),
    ]
    if endpoint.method == "POST":
        bodies.append(("empty", b""))
        bodies.append(("missing fields", b"{}"))
    if endpoint.name_field:
        for label, bad in (
            ("NUL", "a\u0000b"),
            ("newline", "a\n"),
            ("blank", "   "),
            ("too long", "x" * 201),
        ):
            bodies.append((f"{label} in name", json.dumps({**valid, endpoint.name_field: bad}).encode()))
    return bodies


def assert_problem(response: Any, what: str) -> None:
    assert 400 <= response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/problem+json"), what
    body = response.json()
    assert body["status"] == response.status_code, what
    assert isinstance(body["detail"], str) and body["detail"], what


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=lambda e: e.id)
async def test_bad_bodies_are_4xx_problems_and_change_nothing(ctx: Ctx, endpoint: BodyEndpoint) -> None:
    headers = {**ctx.headers[endpoint.caller], **JSON}
    before = await ctx.counts()
    async with ctx.world.sessions() as session:
        org_before = await session.get(Organization, ctx.org.id)
        user_before = await session.get(User, ctx.user.id)
    for label, content in bad_bodies(endpoint, ctx.max_body):
        response = await ctx.client.request(
            endpoint.method, ctx.path(endpoint.path), content=content, headers=headers
        )
        assert_problem(response, f"{endpoint.id} / {label}")
        assert response.status_code in (400, 422), f"{endpoint.id} / {label}: {response.status_code}"
    assert await ctx.counts() == before
    async with ctx.world.sessions() as session:
        org_after = await session.get(Organization, ctx.org.id)
        user_after = await session.get(User, ctx.user.id)
    assert (org_after.name, org_after.credits) == (org_before.name, org_before.credits)  # type: ignore[union-attr]
    assert (user_after.name, user_after.is_active) == (user_before.name, user_before.is_active)  # type: ignore[union-attr]
    # and the valid body is accepted, so the refusals above were about the body
    response = await ctx.client.request(
        endpoint.method, ctx.path(endpoint.path), json=endpoint.valid(), headers=ctx.headers[endpoint.caller]
    )
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS, ids=lambda e: e.id)
async def test_oversize_body_is_413(ctx: Ctx, endpoint: BodyEndpoint) -> None:
    headers = {**ctx.headers[endpoint.caller], **JSON}
    before = await ctx.counts()
    padding = "x" * ctx.max_body
    content = json.dumps({**endpoint.valid(), "padding": padding}).encode()
    assert len(content) > ctx.max_body
    response = await ctx.client.request(
        endpoint.method, ctx.path(endpoint.path), content=content, headers=headers
    )
    assert_problem(response, endpoint.id)
    assert response.status_code == 413

    # without a Content-Length the limit holds on the bytes actually streamed
    chunks = [content[start : start + 65536] for start in range(0, len(content), 65536)]
    status, content_type = await asgi_request(
        ctx.client, endpoint.method, ctx.path(endpoint.path), headers, chunks
    )
    assert status == 413
    assert content_type.startswith("application/problem+json")
    assert await ctx.counts() == before


async def asgi_request(
    client: AsyncTestClient[Any], method: str, path: str, headers: dict[str, str], chunks: list[bytes]
) -> tuple[int, str]:
    """A request sent in chunks straight to the ASGI app, without Content-Length (the test client cannot)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    messages = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> None:
        await client.app(scope, receive, send)

    client.blocking_portal.call(run)  # where the test client runs the app (its event loop, its engine)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content_type = dict(start["headers"]).get(b"content-type", b"").decode()
    return int(start["status"]), content_type


async def test_body_just_under_the_limit_is_read(ctx: Ctx) -> None:
    body = json.dumps({"name": unique("Org")}).encode()
    content = body[:-1] + b" " * (ctx.max_body - len(body)) + b"}"
    assert len(content) == ctx.max_body
    response = await ctx.client.post(
        API + "/organizations", content=content, headers={**ctx.headers["sysadmin"], **JSON}
    )
    assert response.status_code == 201, response.text


ID_ENDPOINTS = [
    ("GET", "/organizations/{id}", "sysadmin"),
    ("PATCH", "/organizations/{id}", "sysadmin"),
    ("DELETE", "/organizations/{id}", "sysadmin"),
    ("POST", "/organizations/{id}/credits", "sysadmin"),
    ("GET", "/users/{id}", "admin"),
    ("PATCH", "/users/{id}", "admin"),
    ("DELETE", "/users/{id}", "admin"),
    ("GET", "/clients/{id}", "admin"),
    ("DELETE", "/clients/{id}", "admin"),
    ("GET", "/tokens/{id}", "admin"),
    ("DELETE", "/tokens/{id}", "admin"),
]
BAD_IDS = [
    "not-a-uuid",
    "123",
    "0" * 40,
    "00000000-0000-0000-0000-00000000000g",
    "%00",
    "%27%20OR%201%3D1%20--",
    "..%2F..%2Fetc%2Fpasswd",
    "x" * 2000,
    "{id}",
]


@pytest.mark.parametrize(("method", "path", "caller"), ID_ENDPOINTS, ids=lambda v: str(v))
async def test_bad_ids_in_paths_are_4xx_problems(ctx: Ctx, method: str, path: str, caller: str) -> None:
    before = await ctx.counts()
    for bad in BAD_IDS:
        kwargs: dict[str, Any] = {"headers": ctx.headers[caller]}
        if method in ("PATCH", "POST"):
            kwargs["json"] = {"amount": 1} if path.endswith("credits") else {"name": "x"}
        response = await ctx.client.request(method, API + path.replace("{id}", bad), **kwargs)
        assert_problem(response, f"{method} {path} {bad[:20]}")
        assert response.status_code in (400, 404), response.status_code
    assert await ctx.counts() == before


LIST_PATHS = ["/organizations", "/users", "/clients", "/tokens"]
BAD_QUERIES = [
    {"limit": "0"},
    {"limit": "501"},
    {"limit": "-1"},
    {"offset": "-1"},
    {"limit": "abc"},
    {"offset": "1.5"},
    {"limit": ""},
    {"offset": str(2**63)},
    {"limit": "1e3"},
]


@pytest.mark.parametrize("path", LIST_PATHS)
async def test_bad_pagination_is_400(ctx: Ctx, path: str) -> None:
    caller = "sysadmin" if path == "/organizations" else "admin"
    for query in BAD_QUERIES:
        response = await ctx.client.get(API + path, params=query, headers=ctx.headers[caller])
        assert_problem(response, f"{path} {query}")
        assert response.status_code == 400, (query, response.text)
        field = next(iter(query))
        assert any(e["field"] == field for e in response.json()["errors"]), response.json()
    for query in ({"limit": "1"}, {"limit": "500"}, {"offset": "0"}, {"offset": "1000000"}):
        response = await ctx.client.get(API + path, params=query, headers=ctx.headers[caller])
        assert response.status_code == 200, (query, response.text)


@pytest.mark.parametrize("path", ["/users", "/clients"])
async def test_bad_organization_filter_is_400(ctx: Ctx, path: str) -> None:
    response = await ctx.client.get(
        API + path, params={"organization_id": "zz"}, headers=ctx.headers["sysadmin"]
    )
    assert_problem(response, path)
    assert response.status_code == 400


async def test_pagination_pages_through_the_rows(ctx: Ctx) -> None:
    for _ in range(3):
        await ctx.world.user(ctx.org, Role.USER)
    seen: list[str] = []
    offset = 0
    while True:
        response = await ctx.client.get(
            API + "/users", params={"limit": 2, "offset": offset}, headers=ctx.headers["admin"]
        )
        page = response.json()
        assert set(page) == {"items", "total", "limit", "offset"}
        assert (page["limit"], page["offset"], page["total"]) == (2, offset, 5)
        if not page["items"]:
            break
        assert len(page["items"]) <= 2
        seen.extend(item["id"] for item in page["items"])
        offset += 2
    assert len(seen) == len(set(seen)) == 5


# ---------------------------------------------------------------- conflicts and rules (409 / 422)


def assert_status(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["detail"]
    return body


async def test_duplicate_organization_name_is_409(ctx: Ctx) -> None:
    sysadmin = ctx.headers["sysadmin"]
    before = await ctx.counts()
    for name in ("Taken", "  Taken  "):
        assert_status(
            await ctx.client.post(API + "/organizations", json={"name": name}, headers=sysadmin), 409
        )
    assert await ctx.counts() == before
    other = await ctx.client.post(API + "/organizations", json={"name": "Second"}, headers=sysadmin)
    assert other.status_code == 201
    renamed = await ctx.client.patch(
        API + f"/organizations/{other.json()['id']}", json={"name": "Taken"}, headers=sysadmin
    )
    assert_status(renamed, 409)
    # renaming to its own name is no conflict
    same = await ctx.client.patch(
        API + f"/organizations/{ctx.org.id}", json={"name": "Taken"}, headers=sysadmin
    )
    assert same.status_code == 200


async def test_duplicate_user_email_is_409(ctx: Ctx) -> None:
    admin = ctx.headers["admin"]
    before = await ctx.counts()
    for email in ("someone@example.com", "SomeOne@Example.COM", " someone@example.com"):
        body = {"email": email, "name": "Twin", "password": "long enough pw"}
        response = await ctx.client.post(API + "/users", json=body, headers=admin)
        if email.startswith(" "):  # leading blank: refused by the email format (422), or normalised to a conflict
            assert response.status_code in (422, 409), response.text
        else:
            assert_status(response, 409)
    # an email held in another organization conflicts too (emails are the login, instance-wide)
    elsewhere = await ctx.world.user(await ctx.world.org(), Role.USER, email="elsewhere@example.com")
    assert elsewhere.email == "elsewhere@example.com"
    response = await ctx.client.post(
        API + "/users", json={"email": "elsewhere@example.com", "name": "X"}, headers=admin
    )
    assert_status(response, 409)
    assert await ctx.counts() == (before[0] + 1, before[1] + 1, before[2], before[3])
    response = await ctx.client.patch(
        API + f"/users/{ctx.user.id}", json={"email": "ADMIN@example.com"}, headers=admin
    )
    assert_status(response, 409)
    # changing to the same address, in other letters, is no conflict
    response = await ctx.client.patch(
        API + f"/users/{ctx.user.id}", json={"email": "SOMEONE@example.com"}, headers=admin
    )
    assert response.status_code == 200 and response.json()["email"] == "someone@example.com"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/clients", {"name": "crm", "scopes": ["contacts:read", "contacts:delete"]}),
        ("/clients", {"name": "crm", "scopes": ["CONTACTS:READ"]}),
        ("/clients", {"name": "crm", "scopes": [""]}),
        ("/tokens", {"name": "cli", "scopes": ["everything"]}),
        ("/tokens", {"name": "cli", "scopes": ["contacts:read", "admin"]}),
    ],
)
async def test_invalid_scopes_are_422_with_field_errors(ctx: Ctx, path: str, body: dict[str, Any]) -> None:
    before = await ctx.counts()
    problem = assert_status(await ctx.client.post(API + path, json=body, headers=ctx.headers["admin"]), 422)
    assert [e["field"] for e in problem["errors"]] == ["scopes"]
    assert problem["errors"][0]["message"]
    assert await ctx.counts() == before


@pytest.mark.parametrize("password", ["short", "123456789", " " * 9])
async def test_short_password_is_422(ctx: Ctx, password: str) -> None:
    before = await ctx.counts()
    body = {"email": "new@example.com", "name": "New", "password": password}
    problem = assert_status(
        await ctx.client.post(API + "/users", json=body, headers=ctx.headers["admin"]), 422
    )
    assert [e["field"] for e in problem["errors"]] == ["password"]
    assert "10" in problem["detail"]
    assert await ctx.counts() == before
    async with ctx.world.sessions() as session:
        old_hash = (await session.get(User, ctx.user.id)).password_hash  # type: ignore[union-attr]
    problem = assert_status(
        await ctx.client.patch(
            API + f"/users/{ctx.user.id}", json={"password": password}, headers=ctx.headers["admin"]
        ),
        422,
    )
    assert [e["field"] for e in problem["errors"]] == ["password"]
    async with ctx.world.sessions() as session:
        assert (await session.get(User, ctx.user.id)).password_hash == old_hash  # type: ignore[union-attr]


async def test_overlong_password_is_refused(ctx: Ctx) -> None:
    body = {"email": "new@example.com", "name": "New", "password": "x" * 1025}
    response = await ctx.client.post(API + "/users", json=body, headers=ctx.headers["admin"])
    assert_problem(response, "overlong password")
    assert any(e["field"] == "password" for e in response.json()["errors"])


async def test_bad_email_is_refused_with_a_field_error(ctx: Ctx) -> None:
    for email in ("not-an-email", "a@b", "a b@example.com", "a@example.com\n", "@example.com", ""):
        response = await ctx.client.post(
            API + "/users", json={"email": email, "name": "X"}, headers=ctx.headers["admin"]
        )
        assert_problem(response, repr(email))
        assert any(e["field"] == "email" for e in response.json()["errors"]), email


async def test_unknown_enum_values_are_refused(ctx: Ctx) -> None:
    admin, sysadmin = ctx.headers["admin"], ctx.headers["sysadmin"]
    response = await ctx.client.post(
        API + "/users", json={"email": "x@example.com", "name": "X", "role": "king"}, headers=admin
    )
    assert_problem(response, "role")
    response = await ctx.client.patch(
        API + f"/organizations/{ctx.org.id}", json={"plan": "FREE"}, headers=sysadmin
    )
    assert_problem(response, "plan")


async def test_sysadmin_must_name_an_existing_organization(ctx: Ctx) -> None:
    sysadmin = ctx.headers["sysadmin"]
    body = {"email": "x@example.com", "name": "X", "role": "user"}
    problem = assert_status(await ctx.client.post(API + "/users", json=body, headers=sysadmin), 422)
    assert [e["field"] for e in problem["errors"]] == ["organization_id"]
    response = await ctx.client.post(
        API + "/users", json={**body, "organization_id": str(uuid.uuid4())}, headers=sysadmin
    )
    assert_status(response, 404)
    problem = assert_status(
        await ctx.client.post(API + "/clients", json={"name": "c", "scopes": []}, headers=sysadmin), 422
    )
    assert [e["field"] for e in problem["errors"]] == ["organization_id"]
    response = await ctx.client.post(
        API + "/clients",
        json={"name": "c", "scopes": [], "organization_id": str(uuid.uuid4())},
        headers=sysadmin,
    )
    assert_status(response, 404)
