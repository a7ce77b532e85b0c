"""API rate limits (docs/decisions/0034): budgets per token or API client, per IP on the token endpoint
and the sign-in form, counted in Redis — both servers — and shared by two real web processes."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from app.audit.models import AuditEntry
from app.config import RateLimitSettings, Settings
from app.embedded_redis import start_embedded_redis
from app.tenants.models import Organization, Role
from app.tenants.request_limits import WINDOW_SECONDS, RequestLimiter
from tests.conftest import World, bearer
from tests.helpers import free_port, stop_process, worker_env
from tests.test_web_pages import login, post_form

Client = AsyncTestClient[Litestar]
HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Own keys in Redis (the queue prefix names them): other runs sharing the server never touch them."""
    return dataclasses.replace(
        settings,
        redis=dataclasses.replace(settings.redis, queue_prefix=f"t{uuid.uuid4().hex[:10]}"),
        rate_limits=RateLimitSettings(oauth_per_ip=3, login_per_ip=2),
    )


def numbers(response: httpx.Response) -> tuple[int, int, int]:
    limit, remaining, reset = (int(response.headers[name]) for name in HEADERS)
    return limit, remaining, reset


async def in_one_window(client: Client, headers: dict[str, str]) -> httpx.Response:
    """A first request well inside its window (if the window is about to end, the next one's first)."""
    response = await client.get("/api/v1/me", headers=headers)
    reset = numbers(response)[2]
    if reset < 5:
        await asyncio.sleep(reset + 0.5)
        response = await client.get("/api/v1/me", headers=headers)
    return response


async def set_budget(client: Client, sysadmin: dict[str, str], org: Organization, budget: int | None) -> Any:
    return await client.patch(f"/api/v1/organizations/{org.id}", json={"api_rate_limit": budget}, headers=sysadmin)


async def test_every_api_answer_carries_the_headers(client: Client, world: World, settings: Settings) -> None:
    org = await world.org()
    token = bearer(await world.token(await world.user(org)))
    first = await in_one_window(client, token)
    assert first.status_code == 200
    limit, remaining, reset = numbers(first)
    assert limit == settings.rate_limits.api_per_token == 1200
    assert 0 < reset <= WINDOW_SECONDS and remaining in (limit - 1, limit - 2)
    missing = await client.get(f"/api/v1/contacts/{uuid.uuid4()}", headers=token)  # an error answer too
    assert missing.status_code == 404 and numbers(missing)[1] == remaining - 1
    invalid = await client.post("/api/v1/contacts", json={"first_name": 5}, headers=token)
    assert invalid.status_code == 400 and numbers(invalid)[1] == remaining - 2
    assert "RateLimit-Limit" not in (await client.get("/health")).headers  # not an API answer
    # without a valid token there is no token's budget: refusals count per client IP (the token endpoint's budget)
    refused = [await client.get("/api/v1/me"), await client.get("/api/v1/me", headers=bearer("garbage"))]
    assert [r.status_code for r in refused] == [401, 401]
    assert [numbers(r)[:2] for r in refused] == [(3, 2), (3, 1)]


async def test_past_the_budget_429_with_retry_after_per_token_and_per_client(client: Client, world: World) -> None:
    org = await world.org(api_rate_limit=3)
    user = await world.user(org)
    token, other_token = bearer(await world.token(user)), bearer(await world.token(user))
    first = await in_one_window(client, token)
    left = numbers(first)[1]
    statuses = [(await client.get("/api/v1/me", headers=token)).status_code for _ in range(left)]
    over = await client.get("/api/v1/contacts", headers=token)
    assert first.status_code == 200 and statuses == [200] * left and over.status_code == 429, (left, statuses)
    assert over.headers["content-type"].startswith("application/problem+json")
    body = over.json()
    assert body["status"] == 429 and "3 API requests" in body["detail"], body
    limit, remaining, reset = numbers(over)
    assert (limit, remaining) == (3, 0) and int(over.headers["Retry-After"]) == reset > 0
    assert (await client.get("/api/v1/me", headers=other_token)).status_code == 200  # each token its own budget

    # an API client's tokens share one budget: a new token does not refill it
    client_id, secret = await world.api_client(org, ["contacts:read"])

    async def client_token() -> dict[str, str]:
        answer = await client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
        assert answer.status_code == 200, answer.text
        return bearer(answer.json()["access_token"])

    one = await client_token()
    spent = [(await client.get("/api/v1/contacts", headers=one)).status_code for _ in range(3)]
    another = await client_token()
    after = await client.get("/api/v1/contacts", headers=another)
    assert spent.count(200) + (after.status_code == 200) <= 3 and 429 in [*spent, after.status_code], (spent, after)


async def test_the_sysadmin_sets_an_organizations_budget_audited(
    client: Client, world: World, sessions: Any, settings: Settings
) -> None:
    org, other = await world.org(), await world.org()
    sysadmin = bearer(await world.token(await world.user(None, Role.SYSADMIN)))
    admin = bearer(await world.token(await world.user(org, Role.ORG_ADMIN)))

    changed = await set_budget(client, sysadmin, org, 50)
    assert changed.status_code == 200 and changed.json()["api_rate_limit"] == 50, changed.text
    user = bearer(await world.token(await world.user(org)))  # a token first used after the change
    assert (await client.get("/api/v1/organization", headers=admin)).json()["api_rate_limit"] == 50
    async with sessions() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "organization.rate_limit_changed"))
    assert entry is not None and entry.target_id == str(org.id) and "api_rate_limit" in entry.summary
    first = await in_one_window(client, user)
    assert numbers(first)[0] == 50  # the budget rides on the token's organization

    # an org admin may not set it, on its own organization or another (403), nor through PATCH /organization
    assert (await set_budget(client, admin, org, 100_000)).status_code == 403
    assert (await set_budget(client, admin, other, 100_000)).status_code == 403
    own = await client.patch("/api/v1/organization", json={"api_rate_limit": 100_000}, headers=admin)
    assert own.status_code == 400, own.text
    assert (await set_budget(client, sysadmin, Organization(id=uuid.uuid4()), 5)).status_code == 404
    for bad in (0, -1, 10_000_000, "many"):
        refused = await set_budget(client, sysadmin, org, bad)  # type: ignore[arg-type]
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "api_rate_limit", refused.text
    async with sessions() as session:
        assert await session.scalar(select(Organization.api_rate_limit).where(Organization.id == org.id)) == 50
        assert await session.scalar(select(Organization.api_rate_limit).where(Organization.id == other.id)) is None

    back = await set_budget(client, sysadmin, org, None)  # the instance default again
    assert back.status_code == 200 and back.json()["api_rate_limit"] is None
    assert numbers(await client.get("/api/v1/me", headers=admin))[0] == settings.rate_limits.api_per_token


async def test_the_sysadmin_page_sets_the_budget(client: Client, world: World, sessions: Any) -> None:
    org = await world.org()
    sysadmin = await world.user(None, Role.SYSADMIN)
    admin = await world.user(org, Role.ORG_ADMIN)
    page = f"/admin/organizations/{org.id}"
    assert (await login(client, sysadmin.email)).status_code == 303
    shown = await client.get(page)
    assert 'name="api_rate_limit"' in shown.text and "1,200" in shown.text
    saved = await post_form(client, f"{page}/rate-limit", {"api_rate_limit": "5,000"}, page=page)
    assert saved.status_code == 303, saved.text
    assert "5,000 API requests a minute per token" in (await client.get(page)).text
    for bad in ("0", "abc", "99999999"):
        refused = await post_form(client, f"{page}/rate-limit", {"api_rate_limit": bad}, page=page)
        assert refused.status_code == 422 and "whole number of requests a minute" in refused.text
    missing = await post_form(
        client, f"/admin/organizations/{uuid.uuid4()}/rate-limit", {"api_rate_limit": "9"}, page=page
    )
    assert missing.status_code == 404
    async with sessions() as session:
        assert await session.scalar(select(Organization.api_rate_limit).where(Organization.id == org.id)) == 5000
    cleared = await post_form(client, f"{page}/rate-limit", {"api_rate_limit": ""}, page=page)
    assert cleared.status_code == 303
    async with sessions() as session:
        assert await session.scalar(select(Organization.api_rate_limit).where(Organization.id == org.id)) is None

    await post_form(client, "/logout", {}, page="/")
    assert (await login(client, admin.email)).status_code == 303
    forbidden = await post_form(client, f"{page}/rate-limit", {"api_rate_limit": "100000"}, page="/")
    assert forbidden.status_code == 403
    async with sessions() as session:
        assert await session.scalar(select(Organization.api_rate_limit).where(Organization.id == org.id)) is None


async def test_the_token_endpoint_and_the_sign_in_form_are_limited_per_ip(client: Client, world: World) -> None:
    form = {"grant_type": "client_credentials"}
    answers = [await client.post("/oauth/token", data=form, auth=("nobody", "wrong")) for _ in range(4)]
    assert [a.status_code for a in answers][:1] == [401] and answers[-1].status_code == 429
    assert all(name in answers[0].headers for name in HEADERS) and numbers(answers[0])[0] == 3
    over = answers[-1]
    assert over.json()["status"] == 429 and int(over.headers["Retry-After"]) > 0

    guesses = [await client.get("/api/v1/contacts", headers=bearer(f"vol_at_{n}")) for n in range(4)]
    assert [g.status_code for g in guesses] == [401, 401, 401, 429]
    assert "without a valid token" in guesses[-1].json()["detail"] and int(guesses[-1].headers["Retry-After"]) > 0

    user = await world.user(await world.org())
    tries = [(await login(client, user.email, "wrong password")).status_code for _ in range(2)]
    locked = await login(client, user.email)  # the right password, but this address has spent its budget
    assert tries[:1] == [400] and locked.status_code == 429, (tries, locked.status_code)
    assert "Too many sign-in attempts" in locked.text and int(locked.headers["Retry-After"]) > 0


async def test_fixed_windows_on_each_redis_server(redis_url: str) -> None:
    """The limiter alone, on each Redis server: a fixed window per bucket, then a fresh one."""
    limiter = RequestLimiter(RateLimitSettings(), redis_url, f"t{uuid.uuid4().hex[:10]}:rate")
    try:
        bucket, now = f"token:{uuid.uuid4()}", time.time()
        windows = [await limiter.hit(bucket, 2, now=now) for _ in range(3)]
        assert [(w.remaining, w.allowed) for w in windows if w] == [(1, True), (0, True), (0, False)]
        assert windows[0] and 0 < windows[0].reset <= WINDOW_SECONDS
        later = await limiter.hit(bucket, 2, now=now + WINDOW_SECONDS)
        assert later is not None and later.allowed and later.remaining == 1
        other = await limiter.hit(f"token:{uuid.uuid4()}", 2, now=now)
        assert other is not None and other.remaining == 1  # buckets are independent
        assert await limiter.hit(bucket, 0) is None  # 0: no limit
    finally:
        await limiter.close()


async def test_redis_down_fails_open_with_one_warning_then_recovers(tmp_path: Path) -> None:
    """The embedded Redis stopped under a running limiter: requests pass (no window), one warning for
    the outage, Redis left alone meanwhile; started again on the same port, counting resumes."""
    port = free_port()
    server = start_embedded_redis(tmp_path / "first", persist=False, port=port)
    limiter = RequestLimiter(RateLimitSettings(), server.url, f"t{uuid.uuid4().hex[:10]}:rate", pause=0.3)
    try:
        assert await limiter.hit("token:a", 5) is not None
        server.stop()
        with structlog.testing.capture_logs() as logs:
            started = time.perf_counter()
            results = [await limiter.hit("token:a", 5) for _ in range(20)]
            assert time.perf_counter() - started < 2  # no timeout paid per request
            await asyncio.sleep(0.4)
            results.append(await limiter.hit("token:a", 5))  # asked again after the pause: still down
            server = start_embedded_redis(tmp_path / "second", persist=False, port=port)
            await asyncio.sleep(0.4)
            back = await limiter.hit("token:a", 5)
        assert results == [None] * 21
        assert back is not None and back.allowed  # scripts loaded again into the new server
        events = [entry["event"] for entry in logs]
        assert events.count("API rate limits not enforced: Redis unreachable") == 1, events
        assert "API rate limits enforced again: Redis reachable" in events
    finally:
        await limiter.close()
        server.stop()


@pytest.fixture
def two_servers(settings: Settings, engine: Any) -> Iterator[list[str]]:
    """Two ``voluble run`` processes on this test's database, Redis and key prefix."""
    urls, procs = [], []
    for _ in range(2):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = worker_env(settings, VOLUBLE_PUBLIC_URL=url, VOLUBLE_LOG_LEVEL="WARNING")
        cmd = [sys.executable, "-m", "app", "run", "--host", "127.0.0.1", "--port", str(port)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
        urls.append(url)
    try:
        deadline = time.monotonic() + 150  # a loaded machine: each start runs the plugin health check
        for url, proc in zip(urls, procs, strict=True):
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, "a server did not start"
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        yield urls
    finally:
        for proc in procs:
            stop_process(proc)


async def test_the_budget_is_shared_by_two_web_processes(two_servers: list[str], world: World) -> None:
    org = await world.org()
    sysadmin = bearer(await world.token(await world.user(None, Role.SYSADMIN)))
    token = bearer(await world.token(await world.user(org)))
    budget = 6
    async with httpx.AsyncClient(timeout=30) as http:
        changed = await http.patch(
            f"{two_servers[0]}/api/v1/organizations/{org.id}", json={"api_rate_limit": budget}, headers=sysadmin
        )
        assert changed.status_code == 200, changed.text
        first = await http.get(f"{two_servers[1]}/api/v1/me", headers=token)
        if numbers(first)[2] < 5:  # too close to the end of the window: start in the next one
            await asyncio.sleep(numbers(first)[2] + 0.5)
            first = await http.get(f"{two_servers[1]}/api/v1/me", headers=token)
        assert first.status_code == 200 and numbers(first)[:2] == (budget, budget - 1), first.headers
        answers = [first]
        for n in range(budget + 1):  # alternately on each process
            answers.append(await http.get(f"{two_servers[n % 2]}/api/v1/me", headers=token))
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * budget + [429, 429], statuses
    assert [numbers(a)[1] for a in answers] == [*range(budget - 1, -1, -1), 0, 0]
    assert all(int(a.headers["Retry-After"]) > 0 for a in answers[budget:])
