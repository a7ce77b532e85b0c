"""The browser pages: sign-in, CSRF, roles and tenancy, password reset and change, the admin pages."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import utcnow
from app.config import Settings
from app.tenants.models import AccessToken, ApiClient, Organization, PasswordResetToken, Role, User
from app.tenants.services import AccountService, PasswordResetService
from tests.conftest import PASSWORD, World

Client = AsyncTestClient[Litestar]
CSRF_INPUT = re.compile(r'name="_csrf_token" value="([^"]+)"')
NEW_PASSWORD = "a brand new passphrase"


async def csrf(client: Client, path: str = "/login") -> str:
    """Open a page (which sets the CSRF cookie) and return the token of its forms."""
    response = await client.get(path)
    match = CSRF_INPUT.search(response.text)
    assert match, f"no CSRF input on {path}: {response.status_code} {response.text[:300]}"
    return match.group(1)


async def post_form(client: Client, path: str, data: dict[str, Any], page: str | None = None, **kw: Any) -> Any:
    token = await csrf(client, page or path)
    return await client.post(path, data={**data, "_csrf_token": token}, follow_redirects=False, **kw)


async def login(client: Client, email: str, password: str = PASSWORD, next_url: str = "") -> Any:
    return await post_form(client, "/login", {"email": email, "password": password, "next": next_url})


def cookie_jar(client: Client) -> list[Any]:
    """The client's cookies, to play another browser later (one client per app: lifespans must not nest)."""
    return list(client.cookies.jar)


def use_cookies(client: Client, cookies: list[Any]) -> None:
    client.cookies.clear()
    for cookie in cookies:
        client.cookies.jar.set_cookie(cookie)


# ---------------------------------------------------------------- sign in and out


async def test_anonymous_dashboard_redirects_to_login(client: Client) -> None:
    response = await client.get("/", follow_redirects=False)
    assert response.status_code in (302, 303)
    assert response.headers["location"].startswith("/login")
    page = await client.get("/login")
    assert page.status_code == 200
    assert '<label for="f-email">' in page.text and 'autocomplete="current-password"' in page.text
    assert 'hx-boost="true"' in page.text and "x-csrftoken" in page.text


async def test_login_success_and_logout(client: Client, world: World) -> None:
    org = await world.org("Acme Widgets")
    user = await world.user(org, Role.USER)
    response = await login(client, user.email.upper())
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers.get("set-cookie", "")
    assert "voluble_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    home = await client.get("/")
    assert home.status_code == 200
    assert "Acme Widgets" in home.text and user.name in home.text
    assert 'href="/admin/organizations"' not in home.text and 'href="/users"' not in home.text
    assert home.headers.get("vary", "").lower().find("hx-request") >= 0

    out = await post_form(client, "/logout", {}, page="/")
    assert out.status_code == 303 and out.headers["location"] == "/login"
    after = await client.get("/login")
    assert "You are signed out." in after.text
    assert (await client.get("/", follow_redirects=False)).status_code in (302, 303)


async def test_login_wrong_password_shows_inline_error(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    response = await login(client, user.email, "not the password")
    assert response.status_code == 400
    assert "Wrong email or password." in response.text
    assert f'value="{user.email}"' in response.text  # the email is kept, the password is not
    unknown = await login(client, "nobody@example.com", "not the password")
    assert unknown.status_code == 400 and "Wrong email or password." in unknown.text
    empty = await login(client, "", "")
    assert empty.status_code == 400 and 'aria-invalid="true"' in empty.text


async def test_login_redirects_to_local_next_only(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    response = await login(client, user.email, next_url="/tokens?page=2")
    assert response.headers["location"] == "/tokens?page=2"
    await post_form(client, "/logout", {}, page="/")
    for bad in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"):
        response = await login(client, user.email, next_url=bad)
        assert response.headers["location"] == "/", bad
        await post_form(client, "/logout", {}, page="/")
    page = await client.get("/login?next=//evil.example")
    assert "evil.example" not in page.text


async def test_login_is_throttled(client: Client, world: World, settings: Settings) -> None:
    user = await world.user(await world.org(), Role.USER)
    for _ in range(settings.security.login_max_failures_account):
        assert (await login(client, user.email, "wrong password!")).status_code == 400
    throttled = await login(client, user.email, PASSWORD)  # even the right password waits
    assert throttled.status_code == 429
    assert "Too many failed logins" in throttled.text
    assert int(throttled.headers["retry-after"]) > 0


async def test_suspended_organization_cannot_sign_in(client: Client, world: World) -> None:
    user = await world.user(await world.org(suspended=True), Role.USER)
    response = await login(client, user.email)
    assert response.status_code == 403
    assert "suspended" in response.text


# ---------------------------------------------------------------- CSRF


async def test_post_without_csrf_token_is_refused(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    await client.get("/login")  # the CSRF cookie is set, but the form does not carry the token
    response = await client.post("/login", data={"email": user.email, "password": PASSWORD}, follow_redirects=False)
    assert response.status_code == 403
    assert "form expired" in response.text
    forged = await client.post(
        "/login",
        data={"email": user.email, "password": PASSWORD},
        headers={"x-csrftoken": "f" * 128},
        follow_redirects=False,
    )
    assert forged.status_code == 403
    # The header works as well as the hidden input (that is how htmx sends it).
    token = await csrf(client)
    ok = await client.post(
        "/login",
        data={"email": user.email, "password": PASSWORD},
        headers={"x-csrftoken": token},
        follow_redirects=False,
    )
    assert ok.status_code == 303


# ---------------------------------------------------------------- roles and tenancy


async def test_role_based_access(client: Client, world: World) -> None:
    org = await world.org()
    user = await world.user(org, Role.USER)
    await login(client, user.email)
    for path in ("/admin/organizations", f"/admin/organizations/{org.id}", "/users", "/clients"):
        response = await client.get(path)
        assert response.status_code == 403, path
        assert "You cannot open this page" in response.text
    assert (await client.get("/tokens")).status_code == 200
    assert (await client.get("/account/password")).status_code == 200
    forbidden = await post_form(client, "/admin/organizations", {"name": "Sneaky"}, page="/tokens")
    assert forbidden.status_code == 403


async def test_sysadmin_is_refused_organization_pages_with_one_answer(client: Client, world: World) -> None:
    """Every organization page gets its service from app.tenants.deps: a sysadmin (no organization) gets 403."""
    root = await world.user(None, Role.SYSADMIN)
    await login(client, root.email)
    for path in ("/users", "/clients", "/categories", "/contacts/new", "/servicechains/new", "/settings"):
        response = await client.get(path)
        assert response.status_code == 403 and "sysadmins have none" in response.text, path


async def test_anonymous_pages_redirect_to_login_with_next(client: Client) -> None:
    for path in ("/admin/organizations", "/users", "/clients", "/tokens", "/account/password"):
        response = await client.get(path, follow_redirects=False)
        assert response.status_code in (302, 303), path
        assert response.headers["location"] == f"/login?next={path}"
    htmx = await client.get("/tokens", headers={"HX-Request": "true"})
    assert htmx.headers["hx-redirect"] == "/login?next=/tokens"


async def test_org_admin_cannot_touch_another_organizations_users(client: Client, world: World) -> None:
    mine, theirs = await world.org(), await world.org()
    admin = await world.user(mine, Role.ORG_ADMIN)
    colleague = await world.user(mine, Role.USER)
    stranger = await world.user(theirs, Role.USER)
    await login(client, admin.email)
    assert (await client.get(f"/users/{colleague.id}")).status_code == 200
    page = await client.get(f"/users/{stranger.id}")
    assert page.status_code == 404
    assert "Page not found" in page.text
    listing = await client.get("/users")
    assert colleague.email in listing.text and stranger.email not in listing.text
    for action, data in ((f"/users/{stranger.id}/role", {"role": "org_admin"}), (f"/users/{stranger.id}/remove", {})):
        response = await post_form(client, action, data, page="/users")
        assert response.status_code == 404, action
    async with world.sessions() as session:
        still = await session.get(User, stranger.id)
        assert still is not None and still.role == Role.USER
    assert (await client.get("/admin/organizations")).status_code == 403


async def test_org_admin_cannot_revoke_another_organizations_client(client: Client, world: World) -> None:
    mine, theirs = await world.org(), await world.org()
    admin = await world.user(mine, Role.ORG_ADMIN)
    client_id, _ = await world.api_client(theirs, ["contacts:read"])
    async with world.sessions() as session:
        row = (await session.scalars(select(ApiClient).where(ApiClient.client_id == client_id))).one()
    await login(client, admin.email)
    response = await post_form(client, f"/clients/{row.id}/revoke", {}, page="/clients")
    assert response.status_code == 404
    assert client_id not in (await client.get("/clients")).text
    async with world.sessions() as session:
        assert (await session.get(ApiClient, row.id)).revoked_at is None  # type: ignore[union-attr]


# ---------------------------------------------------------------- password reset


async def _issue_reset(sessions: async_sessionmaker[AsyncSession], user: User, ttl: int = 600) -> str:
    async with sessions() as session:
        raw = await PasswordResetService(session=session).issue(user, ttl)
        await session.commit()
    assert raw
    return raw


async def test_forgot_password_answers_the_same_either_way(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    known = await post_form(client, "/forgot-password", {"email": user.email})
    unknown = await post_form(client, "/forgot-password", {"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 200
    for response in (known, unknown):
        assert "If an account exists for that address, a link is on its way." in response.text
    assert CSRF_INPUT.sub("", known.text).replace(user.email, "@") == CSRF_INPUT.sub("", unknown.text).replace(
        "nobody@example.com", "@"
    )


async def test_password_reset_is_single_use(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    raw = await _issue_reset(world.sessions, user)
    page = await client.get(f"/reset-password/{raw}")
    assert page.status_code == 200 and "Choose a new password" in page.text
    assert page.headers["referrer-policy"] == "no-referrer"
    mismatch = await post_form(
        client, f"/reset-password/{raw}", {"new_password": NEW_PASSWORD, "confirm_password": "something else!"}
    )
    assert mismatch.status_code == 422 and "do not match" in mismatch.text
    short = await post_form(client, f"/reset-password/{raw}", {"new_password": "short", "confirm_password": "short"})
    assert short.status_code == 422 and "at least 10 characters" in short.text
    done = await post_form(
        client, f"/reset-password/{raw}", {"new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
    )
    assert done.status_code == 303 and done.headers["location"] == "/login"
    assert "Your password has been changed" in (await client.get("/login")).text
    assert (await login(client, user.email, PASSWORD)).status_code == 400
    assert (await login(client, user.email, NEW_PASSWORD)).status_code == 303
    await post_form(client, "/logout", {}, page="/")
    # Used once: the link no longer works.
    again = await client.get(f"/reset-password/{raw}")
    assert again.status_code == 400 and "invalid, has expired or has already been used" in again.text
    reuse = await post_form(
        client,
        f"/reset-password/{raw}",
        {"new_password": "yet another passphrase", "confirm_password": "yet another passphrase"},
        page="/login",
    )
    assert reuse.status_code == 400
    assert (await login(client, user.email, NEW_PASSWORD)).status_code == 303


async def test_expired_or_unknown_reset_token_is_refused(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    raw = await _issue_reset(world.sessions, user)
    async with world.sessions() as session:
        for row in await session.scalars(select(PasswordResetToken).where(PasswordResetToken.user_id == user.id)):
            row.expires_at = utcnow() - timedelta(minutes=1)
        await session.commit()
    page = await client.get(f"/reset-password/{raw}")
    assert page.status_code == 400 and "has expired" in page.text
    response = await post_form(
        client,
        f"/reset-password/{raw}",
        {"new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
        page="/login",
    )
    assert response.status_code == 400
    assert (await client.get("/reset-password/vrt_nonsense")).status_code == 400
    assert (await login(client, user.email, PASSWORD)).status_code == 303  # unchanged


# ---------------------------------------------------------------- change password


async def test_change_password_keeps_this_session_and_ends_the_others(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    assert (await login(client, user.email)).status_code == 303
    other_browser = cookie_jar(client)
    client.cookies.clear()
    assert (await login(client, user.email)).status_code == 303
    wrong = await post_form(
        client,
        "/account/password",
        {"current_password": "not it at all", "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
    )
    assert wrong.status_code == 400 and "not your current password" in wrong.text
    mismatch = await post_form(
        client,
        "/account/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": "different one!"},
    )
    assert mismatch.status_code == 422 and "do not match" in mismatch.text
    done = await post_form(
        client,
        "/account/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
    )
    assert done.status_code == 303
    page = await client.get("/account/password")
    assert page.status_code == 200 and "Your password has been changed" in page.text
    assert (await client.get("/")).status_code == 200  # this browser stays signed in
    use_cookies(client, other_browser)
    assert (await client.get("/", follow_redirects=False)).status_code in (302, 303)  # the other is signed out
    async with world.sessions() as session:
        assert await AccountService(session=session).authenticate(user.email, NEW_PASSWORD) is not None


# ---------------------------------------------------------------- sysadmin pages


async def test_sysadmin_creates_and_suspends_organizations(client: Client, world: World) -> None:
    root = await world.user(None, Role.SYSADMIN)
    await login(client, root.email)
    empty = await client.get("/admin/organizations")
    assert empty.status_code == 200
    created = await post_form(client, "/admin/organizations", {"name": "  Globex  ", "plan": "PAY_IN_ADVANCE"})
    assert created.status_code == 303
    detail_url = created.headers["location"]
    detail = await client.get(detail_url)
    assert "Globex" in detail.text and "No one here yet" in detail.text
    duplicate = await post_form(client, "/admin/organizations", {"name": "Globex"})
    assert duplicate.status_code == 422 and "already exists" in duplicate.text
    blank = await post_form(client, "/admin/organizations", {"name": " "})
    assert blank.status_code == 422 and 'aria-invalid="true"' in blank.text

    async with world.sessions() as session:
        org = (await session.scalars(select(Organization).where(Organization.name == "Globex"))).one()
    # Suspend through HTMX: the answer is the row, with the message swapped out of band.
    token = await csrf(client, "/admin/organizations")
    row = await client.post(
        f"/admin/organizations/{org.id}/suspension",
        data={"suspended": "1"},
        headers={"HX-Request": "true", "HX-Target": f"org-{org.id}", "x-csrftoken": token},
    )
    assert row.status_code == 200
    assert row.text.lstrip().startswith(f'<tr id="org-{org.id}"')
    assert "Suspended" in row.text and "Reactivate" in row.text and 'hx-swap-oob="true"' in row.text
    assert "hx-request" in row.headers["vary"].lower()
    # Without HTMX: a redirect back to where the button was.
    back = await post_form(
        client, f"/admin/organizations/{org.id}/suspension", {"suspended": "0", "return_to": "detail"}, page=detail_url
    )
    assert back.status_code == 303 and back.headers["location"] == detail_url
    assert "is active again" in (await client.get(detail_url)).text

    admin_form = {"name": "Grace Admin", "email": "grace@globex.example", "password": "admin password 1"}
    made = await post_form(client, f"{detail_url}/admins", admin_form, page=detail_url)
    assert made.status_code == 303
    detail = await client.get(detail_url)
    assert "grace@globex.example" in detail.text
    again = await post_form(client, f"{detail_url}/admins", admin_form, page=detail_url)
    assert again.status_code == 422 and "already exists" in again.text
    weak_form = {**admin_form, "email": "x@globex.example", "password": "short"}
    weak = await post_form(client, f"{detail_url}/admins", weak_form, page=detail_url)
    assert weak.status_code == 422 and "at least 10 characters" in weak.text
    async with world.sessions() as session:
        grace = (await session.scalars(select(User).where(User.email == "grace@globex.example"))).one()
        assert grace.role == Role.ORG_ADMIN and grace.organization_id == org.id
    assert (await client.get("/admin/organizations/00000000-0000-0000-0000-000000000000")).status_code == 404


async def test_organization_list_paginates(client: Client, world: World) -> None:
    root = await world.user(None, Role.SYSADMIN)
    for i in range(23):
        await world.org(f"Paged Org {i:02d}")
    await login(client, root.email)
    first = await client.get("/admin/organizations")
    assert "Page 1 of 2" in first.text and 'href="/admin/organizations?page=2"' in first.text
    second = await client.get("/admin/organizations?page=2")
    assert "Page 2 of 2" in second.text and second.text.count('<tr id="org-') == 3
    fragment = await client.get("/admin/organizations?page=2", headers={"HX-Request": "true", "HX-Target": "org-list"})
    assert fragment.text.lstrip().startswith('<section id="org-list"') and "<html" not in fragment.text
    boosted = await client.get("/admin/organizations?page=2", headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert "<html" in boosted.text
    assert (await client.get("/admin/organizations?page=junk")).status_code == 200


# ---------------------------------------------------------------- org admin pages


async def test_org_admin_manages_users(client: Client, world: World) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    await login(client, admin.email)
    page = await client.get("/users")
    assert page.status_code == 200 and admin.email in page.text
    form = {"name": "Ada Lovelace", "email": "ada@example.com", "role": "user", "password": "ada's password"}
    assert (await post_form(client, "/users", form)).status_code == 303
    assert "ada@example.com" in (await client.get("/users")).text
    dup = await post_form(client, "/users", form)
    assert dup.status_code == 422 and "already exists" in dup.text
    bad = await post_form(client, "/users", {**form, "email": "not-an-email", "role": "sysadmin"})
    assert bad.status_code == 422 and "valid email" in bad.text and "Choose a role" in bad.text

    async with world.sessions() as session:
        ada = (await session.scalars(select(User).where(User.email == "ada@example.com"))).one()
    token = await csrf(client, "/users")
    hx = {"HX-Request": "true", "x-csrftoken": token}
    row = await client.post(f"/users/{ada.id}/role", data={"role": "org_admin"}, headers=hx)
    assert row.status_code == 200 and row.text.lstrip().startswith(f'<tr id="user-{ada.id}"')
    own = await client.post(f"/users/{admin.id}/role", data={"role": "user"}, headers=hx)
    assert own.headers["hx-retarget"] == "#flashes" and "your own role" in own.text
    self_remove = await client.post(f"/users/{admin.id}/remove", headers=hx)
    assert self_remove.headers["hx-retarget"] == "#flashes" and "cannot remove yourself" in self_remove.text
    removed = await client.post(f"/users/{ada.id}/remove", headers=hx)
    assert removed.status_code == 200 and "<tr" not in removed.text and "has been removed" in removed.text
    async with world.sessions() as session:
        assert await session.get(User, ada.id) is None
        me = await session.get(User, admin.id)
        assert me is not None and me.role == Role.ORG_ADMIN


async def test_org_admin_creates_and_revokes_api_clients(client: Client, world: World) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    await login(client, admin.email)
    assert "No API clients yet" in (await client.get("/clients")).text
    none = await post_form(client, "/clients", {"name": "CRM"})
    assert none.status_code == 422 and "at least one scope" in none.text
    token = await csrf(client, "/clients")
    created = await client.post(
        "/clients",
        data={"name": "CRM", "scopes": ["contacts:read", "messages:send"], "_csrf_token": token},
        follow_redirects=False,
    )
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    match = re.search(r'value="(vcs_[^"]+)"', created.text)
    assert match and "shown only this once" in created.text
    listing = await client.get("/clients")
    assert "CRM" in listing.text and match.group(1) not in listing.text
    async with world.sessions() as session:
        row = (await session.scalars(select(ApiClient).where(ApiClient.organization_id == org.id))).one()
        assert row.scopes == ["contacts:read", "messages:send"] and match.group(1) not in row.secret_hash
    revoked = await post_form(client, f"/clients/{row.id}/revoke", {}, page="/clients")
    assert revoked.status_code == 303
    assert "Revoked" in (await client.get("/clients")).text


async def test_tokens_page(client: Client, world: World) -> None:
    org = await world.org()
    user = await world.user(org, Role.USER)
    await login(client, user.email)
    page = await client.get("/tokens")
    assert "No tokens yet" in page.text and "users:admin" not in page.text  # only the role's scopes are offered
    token = await csrf(client, "/tokens")
    beyond = await client.post(
        "/tokens", data={"name": "x", "scopes": ["users:admin"], "expires_in_days": "30", "_csrf_token": token}
    )
    assert beyond.status_code == 422 and "cannot grant" in beyond.text
    created = await client.post(
        "/tokens", data={"name": "export", "scopes": ["contacts:read"], "expires_in_days": "30", "_csrf_token": token}
    )
    assert created.status_code == 201
    raw = re.search(r'value="(vol_pat_[^"]+)"', created.text)
    assert raw
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {raw.group(1)}"})
    assert me.status_code == 200 and me.json()["scopes"] == ["contacts:read"]
    async with world.sessions() as session:
        row = (await session.scalars(select(AccessToken).where(AccessToken.user_id == user.id))).one()
    revoked = await client.post(
        f"/tokens/{row.id}/revoke", headers={"HX-Request": "true", "x-csrftoken": token}
    )
    assert revoked.status_code == 200 and "Revoked" in revoked.text
    assert (await client.get("/api/v1/me", headers={"Authorization": f"Bearer {raw.group(1)}"})).status_code == 401
    # Someone else's token id is not found.
    other = await world.user(org, Role.USER)
    await world.token(other)
    async with world.sessions() as session:
        theirs = (await session.scalars(select(AccessToken).where(AccessToken.user_id == other.id))).one()
    response = await client.post(f"/tokens/{theirs.id}/revoke", data={"_csrf_token": token})
    assert response.status_code == 404


@pytest.mark.parametrize("path", ["/nope", "/admin/organizations/not-a-uuid"])
async def test_unknown_pages_are_404_pages(client: Client, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert "Page not found" in response.text and "<html" in response.text
