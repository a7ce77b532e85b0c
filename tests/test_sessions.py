"""Browser sessions are server-side: ending one (logout, password change, sign out everywhere,
deactivation) refuses every copy of its cookie at once, in every web process (issue 7, item 4)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from app.asgi import create_app
from app.clock import utcnow
from app.config import Settings
from app.tenants.models import Organization, Role, User, WebSession
from tests.conftest import PASSWORD, World, bearer
from tests.test_web_pages import NEW_PASSWORD, Client, cookie_jar, csrf, login, post_form, use_cookies

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
)
SESSION_ROW = re.compile(r'<tr id="session-([0-9a-f-]{36})"')


async def signed_in(client: Client) -> bool:
    response = await client.get("/", follow_redirects=False)
    assert response.status_code in (200, 302, 303), response.status_code
    return response.status_code == 200


async def as_browser(client: Client, email: str, agent: str = FIREFOX) -> list[Any]:
    """Sign in as a fresh browser (no cookies) and return its cookies."""
    client.cookies.clear()
    response = await login_as(client, email, agent)
    assert response.status_code == 303, response.text
    return cookie_jar(client)


async def login_as(client: Client, email: str, agent: str) -> Any:
    token = await csrf(client, "/login")
    data = {"email": email, "password": PASSWORD, "next": "", "_csrf_token": token}
    return await client.post("/login", data=data, headers={"User-Agent": agent}, follow_redirects=False)


async def session_ids(client: Client) -> list[str]:
    page = await client.get("/account/sessions")
    assert page.status_code == 200, page.text
    return SESSION_ROW.findall(page.text)


# ---------------------------------------------------------------- logout


async def test_a_cookie_copied_before_logout_is_refused_after_it(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    copied = await as_browser(client, user.email)
    assert await signed_in(client)
    out = await post_form(client, "/logout", {}, page="/")
    assert out.status_code == 303 and out.headers["location"] == "/login"

    use_cookies(client, copied)  # the attacker replays the cookie taken before the logout
    page = await client.get("/contacts", follow_redirects=False)
    assert page.status_code in (302, 303) and page.headers["location"].startswith("/login")
    # an HTMX request is sent to the login page the usual way
    fragment = await client.get("/contacts", headers={"HX-Request": "true"}, follow_redirects=False)
    assert fragment.status_code == 200 and fragment.headers["hx-redirect"].startswith("/login")
    # and an unsafe request with the copied cookie (and its CSRF token) does nothing either
    token = await csrf(client, "/login")
    change = await client.post(
        "/account/password",
        data={
            "current_password": "x",
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
            "_csrf_token": token,
        },
        follow_redirects=False,
    )
    assert change.status_code in (302, 303) and change.headers["location"] == "/login"
    # the API never took cookies: still 401
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_sessions_live_in_the_database_not_in_one_process(
    settings: Settings, engine: Any, redis: Any, world: World
) -> None:
    """Several web processes: a logout in one refuses the cookie in the others."""
    user = await world.user(await world.org(), Role.USER)
    first, second, third = create_app(settings), create_app(settings), create_app(settings)
    async with AsyncTestClient(app=first) as one:
        copied = await as_browser(one, user.email)
        assert await signed_in(one)
    async with AsyncTestClient(app=second) as two:
        use_cookies(two, copied)
        assert await signed_in(two)  # another process knows the session
        await post_form(two, "/logout", {}, page="/")
    async with AsyncTestClient(app=third) as three:
        use_cookies(three, copied)
        assert not await signed_in(three)


# ---------------------------------------------------------------- sign-in: a new session id


async def test_signing_in_always_starts_a_new_session(client: Client, world: World) -> None:
    org = await world.org()
    alice, bob = await world.user(org, Role.USER), await world.user(org, Role.USER)
    # a cookie planted before sign-in (here: the anonymous one the logout page leaves) never gets signed in
    await as_browser(client, alice.email)
    await post_form(client, "/logout", {}, page="/")
    planted = cookie_jar(client)
    assert (await login(client, alice.email)).status_code == 303
    as_alice = cookie_jar(client)
    use_cookies(client, planted)
    assert not await signed_in(client)
    # signing in again (as someone else) over a live session ends the old one
    use_cookies(client, as_alice)
    assert await signed_in(client)
    assert (await login(client, bob.email)).status_code == 303
    as_bob = cookie_jar(client)
    assert {c.value for c in as_bob if c.name == "voluble_session"} != {
        c.value for c in as_alice if c.name == "voluble_session"
    }
    use_cookies(client, as_alice)
    assert not await signed_in(client)
    use_cookies(client, as_bob)
    me = await client.get("/")
    assert me.status_code == 200 and bob.email in me.text


# ---------------------------------------------------------------- password change


async def test_a_password_change_ends_the_other_sessions_and_renews_this_one(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    elsewhere = await as_browser(client, user.email, CHROME_MAC)
    here_before = await as_browser(client, user.email)
    assert len(await session_ids(client)) == 2
    done = await post_form(
        client,
        "/account/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
    )
    assert done.status_code == 303
    assert await signed_in(client)  # this browser continues...
    here_after = cookie_jar(client)
    assert len(await session_ids(client)) == 1  # ...alone
    for stale in (elsewhere, here_before):  # ...under a new session id
        use_cookies(client, stale)
        assert not await signed_in(client)
    use_cookies(client, here_after)
    assert await signed_in(client)


# ---------------------------------------------------------------- the sessions page


async def test_the_sessions_page_lists_this_users_live_sessions(client: Client, world: World) -> None:
    org = await world.org()
    user, colleague = await world.user(org, Role.USER), await world.user(org, Role.USER)
    await as_browser(client, colleague.email)  # not listed for the user
    await as_browser(client, user.email, CHROME_MAC)
    await as_browser(client, user.email, FIREFOX)
    page = await client.get("/account/sessions")
    assert page.status_code == 200
    assert len(SESSION_ROW.findall(page.text)) == 2
    assert "Firefox on Linux" in page.text and "Chrome on macOS" in page.text
    assert page.text.count("This browser") == 1 and "testclient" in page.text
    assert "Sign out everywhere" in page.text
    assert 'href="/account/sessions"' in page.text  # in the account menu


async def test_sign_out_everywhere_ends_every_session_of_the_user(client: Client, world: World) -> None:
    org = await world.org()
    user, colleague = await world.user(org, Role.USER), await world.user(org, Role.USER)
    theirs = await as_browser(client, colleague.email)
    elsewhere = await as_browser(client, user.email, CHROME_MAC)
    here = await as_browser(client, user.email)
    out = await post_form(client, "/account/sessions/end-all", {}, page="/account/sessions")
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert "signed out everywhere (2 sessions ended)" in (await client.get("/login")).text
    for jar in (elsewhere, here):
        use_cookies(client, jar)
        assert not await signed_in(client)
    use_cookies(client, theirs)  # another user's session is not touched
    assert await signed_in(client)


async def test_signing_out_one_other_session(client: Client, world: World) -> None:
    home, other = await world.org(), await world.org()
    user = await world.user(home, Role.USER)
    colleague = await world.user(home, Role.USER)
    stranger = await world.user(other, Role.ORG_ADMIN)
    foreign_ids = []
    foreign_jars = []
    for person in (colleague, stranger):
        foreign_jars.append(await as_browser(client, person.email))
        foreign_ids += await session_ids(client)
    elsewhere = await as_browser(client, user.email, CHROME_MAC)
    [elsewhere_id] = await session_ids(client)
    here = await as_browser(client, user.email)
    token = await csrf(client, "/account/sessions")
    hx = {"HX-Request": "true", "x-csrftoken": token}
    ended = await client.post(f"/account/sessions/{elsewhere_id}/end", headers=hx)
    assert ended.status_code == 200 and "<tr" not in ended.text and "Chrome on macOS" in ended.text
    assert await signed_in(client)
    # another user's session, of this organization or another, or an unknown id: not found, untouched
    for foreign in [*foreign_ids, str(uuid.uuid4())]:
        refused = await client.post(f"/account/sessions/{foreign}/end", headers=hx)
        assert refused.status_code == 404, foreign
    for jar in foreign_jars:
        use_cookies(client, jar)
        assert await signed_in(client)
    use_cookies(client, elsewhere)
    assert not await signed_in(client)
    use_cookies(client, here)
    assert await signed_in(client)
    client.cookies.clear()
    assert (await client.get("/account/sessions", follow_redirects=False)).status_code in (302, 303)


# ---------------------------------------------------------------- the account itself changes


async def test_a_deactivated_or_deleted_user_is_signed_out(client: Client, world: World) -> None:
    org = await world.org()
    admin = await world.user(org, Role.ORG_ADMIN)
    headers = bearer(await world.token(admin))
    user, other = await world.user(org, Role.USER), await world.user(org, Role.USER)
    jar = await as_browser(client, user.email)
    other_jar = await as_browser(client, other.email)
    off = await client.patch(f"/api/v1/users/{user.id}", json={"is_active": False}, headers=headers)
    assert off.status_code == 200, off.text
    use_cookies(client, jar)
    assert not await signed_in(client)
    on = await client.patch(f"/api/v1/users/{user.id}", json={"is_active": True}, headers=headers)
    assert on.status_code == 200
    assert not await signed_in(client)  # the sessions were ended, not paused: sign in again
    assert (await client.delete(f"/api/v1/users/{other.id}", headers=headers)).status_code == 204
    use_cookies(client, other_jar)
    assert not await signed_in(client)
    async with world.sessions() as session:
        left = await session.scalar(select(WebSession).where(WebSession.user_id == other.id))
        assert left is None  # deleted with the user


async def test_a_suspended_organization_is_signed_out_until_reactivated(client: Client, world: World) -> None:
    org = await world.org()
    user = await world.user(org, Role.USER)
    jar = await as_browser(client, user.email)
    for suspended, expected in ((True, False), (False, True)):
        async with world.sessions() as session:
            await session.execute(update(Organization).where(Organization.id == org.id).values(suspended=suspended))
            await session.commit()
        use_cookies(client, jar)
        assert await signed_in(client) is expected


async def test_an_expired_session_is_refused_and_activity_is_noted_once_a_minute(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    await as_browser(client, user.email)

    async def row() -> WebSession:
        async with world.sessions() as session:
            found = await session.scalar(select(WebSession).where(WebSession.user_id == user.id))
            assert found is not None
            return found

    first = (await row()).last_seen_at
    assert await signed_in(client) and await signed_in(client)
    assert (await row()).last_seen_at == first  # not written on every request
    async with world.sessions() as session:
        earlier = utcnow() - timedelta(minutes=2)
        await session.execute(update(WebSession).where(WebSession.user_id == user.id).values(last_seen_at=earlier))
        await session.commit()
    assert await signed_in(client)
    assert (await row()).last_seen_at > utcnow() - timedelta(minutes=1)
    async with world.sessions() as session:
        past = utcnow() - timedelta(seconds=1)
        await session.execute(update(WebSession).where(WebSession.user_id == user.id).values(expires_at=past))
        await session.commit()
    assert not await signed_in(client)


async def test_the_session_table_keeps_no_raw_ids_and_prunes_dead_sessions(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    for _ in range(3):
        await as_browser(client, user.email)
        await post_form(client, "/logout", {}, page="/")
    await as_browser(client, user.email)
    async with world.sessions() as session:
        rows = list(await session.scalars(select(WebSession).where(WebSession.user_id == user.id)))
        assert await session.get(User, user.id) is not None
    assert len(rows) == 1 and rows[0].revoked_at is None  # the ended ones went at this sign-in
    cookie = next(c.value for c in cookie_jar(client) if c.name == "voluble_session")
    assert rows[0].token_hash not in cookie and len(rows[0].token_hash) == 64
