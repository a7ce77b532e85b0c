"""Security headers (CSP, framing, sniffing, referrer) on every answer; secrets never cacheable; no inline
code in the templates; the API reference served from ``static/`` only."""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from app.asgi import create_app
from app.config import BASE_DIR, Settings
from app.contacts.models import Category, Contact
from app.messaging.models import Message, Servicechain
from app.tenants.models import ApiClient, Role, User
from app.web.security_headers import CONTENT_SECURITY_POLICY, HSTS
from tests.conftest import World, bearer
from tests.test_web_pages import csrf, login

Client = AsyncTestClient[Litestar]
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
TEMPLATES = BASE_DIR / "templates"


def assert_security_headers(response: Any, what: str, *, cacheable: bool = False) -> None:
    headers = response.headers
    assert headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, what
    assert headers.get("x-frame-options") == "DENY", what
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("referrer-policy") in ("same-origin", "no-referrer"), what
    if cacheable:
        assert "no-store" not in headers.get("cache-control", ""), what
    else:
        assert headers.get("cache-control") == "no-store", what


def test_the_policy_allows_no_inline_code() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert directives["default-src"] == "'self'" and directives["img-src"] == "'self' data:"
    assert directives["base-uri"] == "'self'" and directives["form-action"] == "'self'"


# ---------------------------------------------------------------- every route


async def _objects(world: World) -> tuple[User, User, dict[str, str]]:
    """An organization with one of everything a page can show, its admin, a sysadmin, and path values."""
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    sysadmin = await world.user(None, Role.SYSADMIN)
    async with world.sessions() as session:
        category = Category(organization_id=org.id, name="Friends")
        contact = Contact(organization_id=org.id, first_name="Ada", email="ada@example.com")
        chain = Servicechain(organization_id=org.id, name="Main", services=["log"])
        session.add_all([category, contact, chain])
        await session.flush()
        message = Message(organization_id=org.id, contact_id=contact.id, servicechain_id=chain.id, content="Hi")
        session.add(message)
        await session.commit()
    client_id, _ = await world.api_client(org, ["contacts:read"])
    async with world.sessions() as session:
        api_client = await session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
        assert api_client is not None
    values = {
        "organization_id": str(org.id),
        "user_id": str(admin.id),
        "category_id": str(category.id),
        "contact_id": str(contact.id),
        "chain_id": str(chain.id),
        "message_id": str(message.id),
        "name": "log",
        "token": "not-a-reset-token",
        "path": "no-such-document",
        "client_id": str(api_client.id),
    }
    return admin, sysadmin, values


def _get_paths(app: Litestar, values: dict[str, str]) -> list[str]:
    """Every GET route of the app, its parameters filled (an unknown id: a 404 page, which counts too)."""
    paths = []
    for route in app.routes:
        if "GET" not in getattr(route, "methods", ()) or route.path.startswith("/static"):
            continue
        paths.append(PARAM.sub(lambda m: values.get(m.group(1), str(uuid.uuid4())), route.path))
    return sorted(set(paths))


async def test_every_get_route_carries_the_headers_for_every_caller(client: Client, world: World) -> None:
    admin, sysadmin, values = await _objects(world)
    app = client.app
    paths = _get_paths(app, values)
    assert {"/", "/contacts", "/messages/" + values["message_id"], "/schema", "/api/v1/me"} <= set(paths)
    token = await world.token(admin)
    callers: list[tuple[str, User | None]] = [("anonymous", None), ("org admin", admin), ("sysadmin", sysadmin)]
    seen_ok = 0
    for label, user in callers:
        client.cookies.clear()
        if user is not None:
            assert (await login(client, user.email)).status_code == 303
        for path in paths:
            headers = bearer(token) if path.startswith("/api/") and user is admin else {}
            response = await client.get(path, headers=headers, follow_redirects=False)
            what = f"{label} GET {path}: {response.status_code}"
            assert response.status_code < 500, what
            assert_security_headers(response, what)
            seen_ok += response.status_code == 200
    assert seen_ok > len(paths)  # most of them answered a real page for someone
    # answers no handler made: an unknown page, a wrong method
    for response in (await client.get("/no/such/page"), await client.delete("/login")):
        assert response.status_code in (404, 405)
        assert_security_headers(response, f"{response.request.method} {response.request.url.path}")


async def test_htmx_fragments_and_api_errors_carry_the_headers(client: Client, world: World) -> None:
    admin, _, values = await _objects(world)
    await login(client, admin.email)
    fragment = await client.get(f"/messages/{values['message_id']}", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and 'id="message-status"' in fragment.text
    assert_security_headers(fragment, "message status fragment")
    unauthorized = await client.get("/api/v1/contacts")
    assert unauthorized.status_code == 401
    assert_security_headers(unauthorized, "API 401")
    problem = await client.post("/api/v1/contacts", content=b"{", headers=bearer(await world.token(admin)))
    assert problem.status_code == 400
    assert_security_headers(problem, "API 400")


async def test_static_assets_stay_cacheable(client: Client) -> None:
    for path in ("/static/js/app.js", "/static/css/app.css", "/static/js/htmx.min.js"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert_security_headers(response, path, cacheable=True)
        assert response.headers.get("etag") or response.headers.get("last-modified"), path


async def test_hsts_once_served_over_https(settings: Settings, engine: Any, redis: Any) -> None:
    secure = dataclasses.replace(settings, server=dataclasses.replace(settings.server, public_url="https://v.example"))
    async with AsyncTestClient(app=create_app(secure)) as https_client:
        assert (await https_client.get("/health")).headers.get("strict-transport-security") == HSTS
    async with AsyncTestClient(app=create_app(settings)) as http_client:
        assert "strict-transport-security" not in (await http_client.get("/health")).headers


# ---------------------------------------------------------------- secrets are never cached


async def test_answers_carrying_a_secret_are_no_store(client: Client, world: World) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    headers = bearer(await world.token(admin))
    api_client = await client.post(
        "/api/v1/clients", json={"name": "crm", "scopes": ["contacts:read"]}, headers=headers
    )
    assert api_client.status_code == 201 and api_client.json()["client_secret"]
    assert api_client.headers["cache-control"] == "no-store"
    token = await client.post("/api/v1/tokens", json={"name": "cli"}, headers=headers)
    assert token.status_code == 201 and token.json()["token"]
    assert token.headers["cache-control"] == "no-store"
    body = api_client.json()
    oauth = await client.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(body["client_id"], body["client_secret"])
    )
    assert oauth.status_code == 200 and oauth.json()["access_token"]
    assert oauth.headers["cache-control"] == "no-store"

    await login(client, admin.email)
    for path, data in (
        ("/clients", {"name": "CRM", "scopes": ["contacts:read"]}),
        ("/tokens", {"name": "laptop", "scopes": ["contacts:read"], "expires_in_days": "7"}),
    ):
        created = await client.post(path, data={**data, "_csrf_token": await csrf(client, path)})
        assert created.status_code == 201, created.text[:300]
        assert_security_headers(created, f"POST {path}")
        # the page's own stricter referrer policy is kept
        assert created.headers["referrer-policy"] == "no-referrer"
    for path in ("/services/smtp", "/account/password", "/tokens", "/clients"):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert page.headers["cache-control"] == "no-store", path


# ---------------------------------------------------------------- no inline code


def _tags(source: str) -> list[str]:
    return re.findall(r"<[a-zA-Z][^<>]*>", source)


INLINE_HANDLER = re.compile(r"(?:^|[\s\"'])(on[a-z]+|hx-on[\w:.-]*|data-hx-on[\w:.-]*)\s*=", re.IGNORECASE)


def inline_code(source: str) -> list[str]:
    """What a CSP without 'unsafe-inline' would refuse in an HTML source (a template)."""
    found = []
    source = re.sub(r"\{#.*?#\}", "", source, flags=re.DOTALL)  # Jinja comments are not sent
    for tag in _tags(source):
        name = tag[1:].split(None, 1)[0].rstrip(">").lower()
        if name == "script" and not re.search(r"\ssrc\s*=", tag):
            found.append(f"inline script: {tag}")
        if name == "style":
            found.append(f"style element: {tag}")
        if match := INLINE_HANDLER.search(tag[len(name) + 1 :]):
            found.append(f"{match.group(1)} attribute: {tag}")
        if re.search(r"\sstyle\s*=", tag):
            found.append(f"style attribute: {tag}")
        if re.search(r"=\s*[\"']?\s*javascript:", tag, re.IGNORECASE):
            found.append(f"javascript: URL: {tag}")
    return found


def test_the_scan_finds_inline_code() -> None:
    assert (
        inline_code(
            '{# <script>x</script> #}<p>on=1 is text</p><script src="/static/js/app.js" defer></script><a href="/">x</a>'
        )
        == []
    )
    for bad in (
        "<script>alert(1)</script>",
        '<button type="button" onclick="go()">',
        "<input\n  onfocus='x()'>",
        '<div hx-on::after-request="x()">',
        '<a href="javascript:history.back()">',
        '<p style="color: red">',
        "<style>p{}</style>",
    ):
        assert inline_code(bad), bad


def test_no_template_has_inline_code() -> None:
    found = {
        str(path.relative_to(TEMPLATES)): problems
        for path in sorted(TEMPLATES.rglob("*.html"))
        if (problems := inline_code(path.read_text()))
    }
    assert found == {}


# ---------------------------------------------------------------- the API reference


def _references(html: str) -> list[str]:
    return re.findall(r"""\s(?:src|href)\s*=\s*["']([^"']+)["']""", html)


@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
async def test_the_api_reference_uses_only_local_assets(client: Client, path: str) -> None:
    page = await client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert_security_headers(page, path)
    assert inline_code(page.text) == []
    refs = _references(page.text)
    assert "/static/vendor/swagger-ui-5.35.0/swagger-ui-bundle.js" in refs and "/static/js/api-docs.js" in refs
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), f"{path} references {ref}"
        assert (await client.get(ref)).status_code == 200, ref
    assert 'data-spec-url="/schema/openapi.json"' in page.text
    # no Swagger OAuth redirect page (with its inline script): the API takes bearer tokens
    assert (await client.get("/schema/oauth2-redirect.html")).status_code == 404


def test_vendored_assets_are_listed_with_their_licence() -> None:
    vendored = (BASE_DIR / "static" / "VENDORED.md").read_text()
    folder = BASE_DIR / "static" / "vendor" / "swagger-ui-5.35.0"
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert (folder / name).is_file() and f"swagger-ui-5.35.0/{name}" in vendored
    assert "Apache License" in (folder / "LICENSE").read_text()
