"""A credential never mints or seizes a broader one (issue 7, item 5), and password resets (item 6):
one used link revokes the others, requests are throttled and cost the same for any address."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar
from redis.asyncio import Redis
from saq import Job
from sqlalchemy import func, select

from app.config import RedisSettings, Settings
from app.queues import make_queue
from app.tenants.jobs import send_password_reset
from app.tenants.models import Organization, PasswordResetToken, Role, User
from app.tenants.principal import ALL_SCOPES, ROLE_SCOPES
from app.tenants.services import AccountService, PasswordResetService
from tests.conftest import PASSWORD, World, bearer
from tests.helpers import free_port
from tests.test_api_tenancy import oauth_token
from tests.test_web_pages import CSRF_INPUT, NEW_PASSWORD, Client, cookie_jar, csrf, login, post_form, use_cookies

API = "/api/v1"
PER_ADDRESS, PER_IP = 3, 5
CSRF_HEADER = re.compile(r'"x-csrftoken": "[^"]+"')
USER_SCOPES = sorted(ROLE_SCOPES[Role.USER])


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Small reset limits, and queues of this test alone (to see what a request queued)."""
    security = dataclasses.replace(settings.security, reset_max_per_address=PER_ADDRESS, reset_max_per_ip=PER_IP)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    return dataclasses.replace(
        settings, security=security, redis=RedisSettings(url=settings.redis.url, embedded=False, queue_prefix=prefix)
    )


@pytest.fixture(autouse=True)
async def _drop_test_queues(settings: Settings) -> AsyncIterator[None]:
    yield
    client = Redis.from_url(settings.redis.url)
    keys = [k async for k in client.scan_iter(f"saq:*{settings.redis.queue_prefix}-*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@dataclass
class Scene:
    client: Client
    world: World
    home: Organization
    other: Organization
    admin: User
    admin2: User
    user: User
    stranger: User  # an org admin of the other organization
    headers: dict[str, dict[str, str]]

    async def call(self, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return await self.client.request(method, API + path, headers=self.headers[who], **kw)


@pytest.fixture
async def scene(client: Client, world: World) -> Scene:
    home, other = await world.org("Home"), await world.org("Other")
    admin, admin2 = await world.user(home, Role.ORG_ADMIN), await world.user(home, Role.ORG_ADMIN)
    user = await world.user(home, Role.USER)
    stranger = await world.user(other, Role.ORG_ADMIN)
    tokens = {
        "admin": await world.token(admin),  # every scope of the role
        "narrow": await world.token(admin, ["users:admin"]),
        "almost": await world.token(admin, [s for s in ALL_SCOPES if s != "servicechains:write"]),
    }
    for name, scopes in {
        "client_admin": ["users:admin"],
        "client_users": ["users:admin", *USER_SCOPES],
        "client_all": list(ALL_SCOPES),
    }.items():
        cid, secret = await world.api_client(home, scopes)
        tokens[name] = await oauth_token(client, cid, secret, " ".join(scopes))
    headers = {name: bearer(raw) for name, raw in tokens.items()}
    return Scene(client, world, home, other, admin, admin2, user, stranger, headers)


async def queued_jobs(settings: Settings) -> list[Job]:
    """The jobs the app queued in this test's own queues."""
    queue = make_queue(settings)
    await queue.connect()
    try:
        return [job async for job in queue.iter_jobs()]
    finally:
        await queue.disconnect()


def new_user(role: str = "user", **extra: Any) -> dict[str, Any]:
    return {"email": f"new-{uuid.uuid4().hex[:10]}@example.com", "name": "New Person", "role": role, **extra}


async def count_users(world: World, email: str) -> int:
    async with world.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(User).where(User.email == email)) or 0)


async def password_hash(world: World, user: User) -> str | None:
    async with world.sessions() as session:
        return await session.scalar(select(User.password_hash).where(User.id == user.id))


def refused(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail


CLIENTS = ("client_admin", "client_users", "client_all")
NARROW_TOKENS = ("narrow", "almost")


# ---------------------------------------------------------------- API clients


@pytest.mark.parametrize("who", CLIENTS)
async def test_a_client_cannot_create_an_org_admin(scene: Scene, who: str) -> None:
    for body in (new_user("org_admin"), new_user("org_admin", password="a long enough password")):
        response = await scene.call(who, "POST", "/users", json=body)
        refused(response, "API client", "user role only")
        assert await count_users(scene.world, body["email"]) == 0


@pytest.mark.parametrize("who", CLIENTS)
async def test_a_client_cannot_repassword_demote_disable_or_delete_an_org_admin(scene: Scene, who: str) -> None:
    target = f"/users/{scene.admin2.id}"
    before = await password_hash(scene.world, scene.admin2)
    for change in ({"password": "the attacker's password"}, {"role": "user"}, {"is_active": False}, {"name": "X"}):
        refused(await scene.call(who, "PATCH", target, json=change), "API client")
    refused(await scene.call(who, "DELETE", target), "API client")
    assert await password_hash(scene.world, scene.admin2) == before
    async with scene.world.sessions() as session:
        admin2 = await AccountService(session=session).authenticate(scene.admin2.email, PASSWORD)
        assert admin2 is not None and admin2.role == Role.ORG_ADMIN and admin2.name != "X"


@pytest.mark.parametrize("who", CLIENTS)
async def test_a_client_cannot_set_any_password_or_raise_a_role(scene: Scene, who: str) -> None:
    body = new_user(password="a long enough password")
    refused(await scene.call(who, "POST", "/users", json=body))
    assert await count_users(scene.world, body["email"]) == 0
    before = await password_hash(scene.world, scene.user)
    response = await scene.call(who, "PATCH", f"/users/{scene.user.id}", json={"password": "the attacker's password"})
    refused(response, "cannot set passwords")
    assert await password_hash(scene.world, scene.user) == before
    refused(await scene.call(who, "PATCH", f"/users/{scene.user.id}", json={"role": "org_admin"}), "user role only")
    async with scene.world.sessions() as session:
        assert (await session.get(User, scene.user.id)).role == Role.USER  # type: ignore[union-attr]


async def test_a_client_manages_plain_users_within_its_scopes(scene: Scene, settings: Settings) -> None:
    # without every scope of the user role, a client cannot mint a user (who would hold them)
    narrow = new_user()
    refused(await scene.call("client_admin", "POST", "/users", json=narrow), "lacks scopes of the user role")
    # with them, it creates users without a password: they are invited to choose one
    body = new_user()
    created = await scene.call("client_users", "POST", "/users", json=body)
    assert created.status_code == 201, created.text
    new_id = created.json()["id"]
    jobs = await queued_jobs(settings)
    assert [(j.function, j.kwargs.get("user_id"), j.kwargs.get("invite")) for j in jobs] == [
        ("send_password_reset", new_id, True)
    ]
    # renaming, deactivating, removing plain users is users:admin work
    assert (await scene.call("client_admin", "PATCH", f"/users/{new_id}", json={"name": "Renamed"})).status_code == 200
    off = await scene.call("client_admin", "PATCH", f"/users/{new_id}", json={"is_active": False})
    assert off.status_code == 200 and off.json()["is_active"] is False
    assert (await scene.call("client_admin", "DELETE", f"/users/{new_id}")).status_code == 204


async def test_the_invitation_is_mailed_with_a_link_that_lasts_days(scene: Scene, settings: Settings) -> None:
    body = new_user()
    created = await scene.call("client_users", "POST", "/users", json=body)
    assert created.status_code == 201
    [job] = await queued_jobs(settings)
    ctx = {"settings": settings, "sessions": scene.world.sessions}
    assert await send_password_reset(ctx, **job.kwargs) == "sent"  # the real job, as a worker runs it
    async with scene.world.sessions() as session:
        row = await session.scalar(
            select(PasswordResetToken).where(PasswordResetToken.user_id == uuid.UUID(created.json()["id"]))
        )
        assert row is not None and row.mailed_at is not None
        lifetime = row.expires_at - row.created_at
        assert lifetime.total_seconds() > settings.security.reset_token_ttl_seconds  # days, not an hour


# ---------------------------------------------------------------- narrowed personal tokens


@pytest.mark.parametrize("who", NARROW_TOKENS)
async def test_a_narrowed_token_cannot_create_or_seize_an_org_admin(scene: Scene, who: str) -> None:
    body = new_user("org_admin", password="a long enough password")
    refused(await scene.call(who, "POST", "/users", json=body), "lacks scopes of the org_admin role")
    assert await count_users(scene.world, body["email"]) == 0
    target = f"/users/{scene.admin2.id}"
    before = await password_hash(scene.world, scene.admin2)
    for change in ({"password": "the attacker's password"}, {"email": "mine@evil.example"}, {"is_active": False}):
        refused(await scene.call(who, "PATCH", target, json=change), "lacks scopes of the org_admin role")
    refused(await scene.call(who, "DELETE", target), "lacks scopes")
    refused(await scene.call(who, "PATCH", f"/users/{scene.user.id}", json={"role": "org_admin"}), "lacks scopes")
    assert await password_hash(scene.world, scene.admin2) == before
    async with scene.world.sessions() as session:
        assert (await session.get(User, scene.user.id)).role == Role.USER  # type: ignore[union-attr]


async def test_a_narrowed_token_is_held_to_its_scopes_for_plain_users(scene: Scene) -> None:
    # users:admin alone: no user can be minted or re-passworded (the account would hold more scopes)
    body = new_user(password="a long enough password")
    refused(await scene.call("narrow", "POST", "/users", json=body), "lacks scopes of the user role")
    refused(
        await scene.call("narrow", "PATCH", f"/users/{scene.user.id}", json={"password": "the attacker's password"}),
        "lacks scopes of the user role",
    )
    # holding every scope of the user role: it may (a token belongs to a person, who may set passwords)
    created = await scene.call("almost", "POST", "/users", json=body)
    assert created.status_code == 201, created.text


@pytest.mark.parametrize("who", ["narrow", "client_admin"])
async def test_no_credential_creates_a_token_or_client_broader_than_itself(scene: Scene, who: str) -> None:
    wider = await scene.call(
        who, "POST", "/clients", json={"name": "wider", "scopes": ["users:admin", "messages:send"]}
    )
    assert wider.status_code == 403, wider.text
    same = await scene.call(who, "POST", "/clients", json={"name": "same", "scopes": ["users:admin"]})
    assert same.status_code == 201, same.text
    if who == "narrow":
        token = await scene.call(who, "POST", "/tokens", json={"name": "wider", "scopes": ["contacts:read"]})
        assert token.status_code == 403, token.text


async def test_an_org_admin_still_manages_admins(scene: Scene) -> None:
    body = new_user("org_admin", password="a long enough password")
    assert (await scene.call("admin", "POST", "/users", json=body)).status_code == 201
    target = f"/users/{scene.admin2.id}"
    assert (await scene.call("admin", "PATCH", target, json={"password": NEW_PASSWORD})).status_code == 200
    async with scene.world.sessions() as session:
        assert await AccountService(session=session).authenticate(scene.admin2.email, NEW_PASSWORD) is not None
    assert (await scene.call("admin", "DELETE", target)).status_code == 204


@pytest.mark.parametrize("who", ["admin", "client_all", "almost"])
async def test_another_organizations_accounts_stay_out_of_reach(scene: Scene, who: str) -> None:
    target = f"/users/{scene.stranger.id}"
    for method, kw in (
        ("PATCH", {"json": {"password": NEW_PASSWORD}}),
        ("PATCH", {"json": {"name": "X"}}),
        ("DELETE", {}),
    ):
        response = await scene.call(who, method, target, **kw)
        assert response.status_code == 404, (method, response.text)  # not 403: nothing to learn
    body = new_user(organization_id=str(scene.other.id))
    assert (await scene.call(who, "POST", "/users", json=body)).status_code == 404
    assert await count_users(scene.world, body["email"]) == 0
    async with scene.world.sessions() as session:
        assert await AccountService(session=session).authenticate(scene.stranger.email, PASSWORD) is not None


# ---------------------------------------------------------------- password reset


async def _issue(world: World, user: User) -> str:
    async with world.sessions() as session:
        raw = await PasswordResetService(session=session).issue(user, 600)
        await session.commit()
    assert raw
    return raw


async def test_a_used_reset_link_revokes_the_others_and_ends_the_sessions(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    assert (await login(client, user.email)).status_code == 303
    signed_in = cookie_jar(client)
    first, second, third = [await _issue(world, user) for _ in range(3)]
    client.cookies.clear()
    form = {"new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
    assert (await post_form(client, f"/reset-password/{second}", form)).status_code == 303
    for other in (first, third):
        assert (await client.get(f"/reset-password/{other}")).status_code == 400
        again = {"new_password": "yet another passphrase", "confirm_password": "yet another passphrase"}
        assert (await post_form(client, f"/reset-password/{other}", again, page="/login")).status_code == 400
    assert (await login(client, user.email, NEW_PASSWORD)).status_code == 303
    use_cookies(client, signed_in)
    assert (await client.get("/", follow_redirects=False)).status_code in (302, 303)


async def test_a_password_change_revokes_outstanding_reset_links(client: Client, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    link = await _issue(world, user)
    assert (await login(client, user.email)).status_code == 303
    form = {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD}
    assert (await post_form(client, "/account/password", form)).status_code == 303
    assert (await client.get(f"/reset-password/{link}")).status_code == 400


@pytest.fixture
async def served(app: Litestar) -> AsyncIterator[str]:
    """The app behind a real HTTP server in this event loop: browsers can come from several addresses."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def browser_at(url: str, ip: str) -> httpx.AsyncClient:
    """A browser whose connections come from ``ip`` (any 127.x.y.z is this machine)."""
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=ip), base_url=url)


async def forgot(browser: Any, email: str) -> httpx.Response:
    return await post_form(browser, "/forgot-password", {"email": email})


def same_page(a: httpx.Response, b: httpx.Response, email_a: str, email_b: str) -> bool:
    """The same page but for the address typed and the CSRF tokens (each browser has its own)."""

    def neutral(text: str, email: str) -> str:
        return CSRF_HEADER.sub("", CSRF_INPUT.sub("", text)).replace(email, "@")

    return neutral(a.text, email_a) == neutral(b.text, email_b)


async def test_forgot_password_is_throttled_per_address(served: str, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    unknown = "nobody-here@example.com"
    answers: dict[str, list[httpx.Response]] = {}
    for email in (user.email, unknown):
        answers[email] = []
        for n in range(PER_ADDRESS + 1):  # each from a different address: only the account's count adds up
            async with browser_at(served, f"127.0.{len(answers)}.{n + 1}") as browser:
                answers[email].append(await forgot(browser, email))
    for email, responses in answers.items():
        assert [r.status_code for r in responses] == [200] * PER_ADDRESS + [429], email
        last = responses[-1]
        assert "Too many reset requests" in last.text and int(last.headers["retry-after"]) > 0
    for known, other in zip(answers[user.email], answers[unknown], strict=True):
        assert known.status_code == other.status_code
        assert same_page(known, other, user.email, unknown)


async def test_forgot_password_is_throttled_per_ip(served: str, world: World) -> None:
    user = await world.user(await world.org(), Role.USER)
    async with browser_at(served, "127.0.9.7") as browser:
        statuses = [(await forgot(browser, f"probe-{n}@example.com")).status_code for n in range(PER_IP)]
        assert statuses == [200] * PER_IP
        blocked = await forgot(browser, user.email)  # a fresh (and real) address, but this IP is done
        assert blocked.status_code == 429 and "Try again in" in blocked.text
    async with browser_at(served, "127.0.9.8") as elsewhere:
        assert (await forgot(elsewhere, user.email)).status_code == 200


async def test_forgot_password_queues_the_same_work_for_any_address(
    client: Client, world: World, settings: Settings
) -> None:
    """The request no longer asks the database: it queues one job either way, and the job decides."""
    user = await world.user(await world.org(), Role.USER)
    inactive = await world.user(await world.org(), Role.USER)
    async with world.sessions() as session:
        await AccountService(session=session).update({"is_active": False}, item_id=inactive.id, auto_commit=True)
    addresses = [user.email, "nobody@example.com", inactive.email]
    for email in addresses:
        assert (await forgot(client, email)).status_code == 200
    jobs = await queued_jobs(settings)
    assert sorted(j.kwargs["email"] for j in jobs) == sorted(addresses)
    assert {j.function for j in jobs} == {"send_password_reset"} and all("user_id" not in j.kwargs for j in jobs)
    ctx = {"settings": settings, "sessions": world.sessions}
    outcomes = {j.kwargs["email"]: await send_password_reset(ctx, **j.kwargs) for j in jobs}
    assert outcomes == {user.email: "sent", "nobody@example.com": "skipped", inactive.email: "skipped"}


async def test_forgot_password_still_answers_when_throttled_for_a_page_with_a_form(client: Client) -> None:
    for _ in range(PER_ADDRESS):
        await forgot(client, "someone@example.com")
    page = await forgot(client, "someone@example.com")
    assert page.status_code == 429
    assert 'name="email"' in page.text and 'role="alert"' in page.text  # the form again, with the reason
    assert await csrf(client, "/forgot-password")
