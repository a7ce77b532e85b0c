"""CSV import under load, with real parts: a server process, a SAQ worker, both databases.

The import runs in a real server (uvicorn, as deployed) while this process and a worker write to
the same database; hostile files are refused while ``/health`` keeps answering.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from app.config import Settings
from app.contacts import csvio
from app.contacts.models import Category, contact_category
from app.messaging.models import Message, MessageState
from app.tenants.models import Role
from tests.conftest import World, bearer
from tests.helpers import free_port, stop_process, worker_env
from tests.pipeline import Tenant, fast_settings, new_contact, send, setup_chain, tenant, wait_final

API = "/api/v1"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


@pytest.fixture
def live_url(settings: Settings, engine: Any) -> Iterator[str]:
    """A real server (``voluble run``: uvicorn) on this test's database, Redis and queues."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--host", "127.0.0.1", "--port", str(port)],
        env=worker_env(settings, VOLUBLE_PUBLIC_URL=url, VOLUBLE_LOG_LEVEL="WARNING"),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the server exited"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
async def live(live_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_url, timeout=120) as c:
        yield c


def rows_csv(n: int, categories: int = 0, distinct: bool = False) -> bytes:
    def cats(i: int) -> str:
        return ";".join(f"Group {i}-{c}" if distinct else f"Group {c}" for c in range(categories))

    lines = ["first_name,surname,email,categories"]
    lines += [f"Person,{i},person{i}@example.com,{cats(i)}" for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


async def upload(client: Any, headers: dict[str, str], raw: bytes, **kw: Any) -> Any:
    files = {"file": ("c.csv", raw, "text/csv")}
    return await client.post(f"{API}/contacts/import", files=files, headers=headers, **kw)


class Sender:
    """Posts messages to the live server from a thread, as another client would, until stopped."""

    def __init__(self, url: str, t: Tenant, contact: str, chain: str) -> None:
        self.url, self.t, self.contact, self.chain = url, t, contact, chain
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while not self.stop.is_set():
                body = {"contact_id": self.contact, "servicechain_id": self.chain, "content": "Hello"}
                self.statuses.append(c.post(f"{API}/messages", json=body, headers=self.t.user).status_code)

    def __enter__(self) -> Sender:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


@pytest.mark.usefixtures("worker")
async def test_import_while_a_worker_sends_creates_every_contact(
    client: AsyncTestClient[Any], live: httpx.AsyncClient, world: World, sessions: Any
) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t)
    await wait_final(client, t, (await send(client, t, contact, chain, "warm-up"))["id"])  # the worker runs

    async def sent() -> int:
        async with sessions() as session:
            return int(await session.scalar(select(func.count()).where(Message.state == MessageState.SENT)) or 0)

    with Sender(str(live.base_url), t, contact, chain) as sender:
        await asyncio.sleep(1)
        before = await sent()
        started = time.perf_counter()
        response = await upload(live, t.user, rows_csv(2500))
        took = time.perf_counter() - started
        after = await sent()
    print(f"\n2,500-row import beside a sending worker: {took:.2f} s ({after - before} messages sent meanwhile)")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["errors"] == [] and report["created"] == 2500, (report["rejected"], report["errors"][:2])
    assert after - before >= 5, "the worker sent (almost) nothing during the import: this proves nothing"
    assert set(sender.statuses) == {201}, sender.statuses


async def test_a_header_of_40000_columns_is_refused_at_once_while_health_answers(
    live: httpx.AsyncClient, world: World
) -> None:
    t = await tenant(world)
    hostile = ("id," * 40_000).encode() + b"\n"  # 120 KB of known, repeated columns
    latencies: list[float] = []
    done = asyncio.Event()

    async def watch_health() -> None:
        while not done.is_set():
            started = time.perf_counter()
            response = await live.get("/health", timeout=1)  # a timeout fails the test
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
            await asyncio.sleep(0.05)

    async def refuse() -> tuple[httpx.Response, float]:
        try:
            started = time.perf_counter()
            response = await upload(live, t.user, hostile, timeout=10)
            return response, time.perf_counter() - started
        finally:
            done.set()

    watcher = asyncio.create_task(watch_health())
    response, took = await refuse()
    await watcher
    print(f"\n40,000-column header refused in {took:.3f} s; /health at most {max(latencies):.3f} s meanwhile")
    assert response.status_code == 422, response.text
    body = response.json()
    assert "40000 columns" in body["detail"] and f"at most {csvio.MAX_COLUMNS}" in body["detail"], body
    assert body["errors"][0]["field"] == "file"
    assert took < 2 and latencies and max(latencies) < 1


class OtherOrganization:
    """Another organization's API client, reading and writing contacts from a thread meanwhile."""

    def __init__(self, url: str, tokens: list[str]) -> None:
        self.url, self.tokens = url, tokens
        self.stop = threading.Event()
        self.answers: list[tuple[str, int, str]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            n = 0
            while not self.stop.is_set():
                headers = bearer(self.tokens[n % len(self.tokens)])  # fresh tokens: their first use is a write
                listed = c.get(f"{API}/contacts", headers=headers)
                self.answers.append(("GET", listed.status_code, listed.text[:200]))
                made = c.post(f"{API}/contacts", json={"first_name": "Other", "surname": str(n)}, headers=headers)
                self.answers.append(("POST", made.status_code, made.text[:200]))
                n += 1

    def __enter__(self) -> OtherOrganization:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


async def test_many_new_categories_import_quickly_while_another_organization_works(
    live: httpx.AsyncClient, world: World, sessions: Any
) -> None:
    t = await tenant(world)
    other_org = await world.org("Elsewhere")
    other_user = await world.user(other_org, Role.USER)
    tokens = [await world.token(other_user) for _ in range(30)]
    with OtherOrganization(str(live.base_url), tokens) as other:
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        response = await upload(live, t.user, rows_csv(1000, categories=10, distinct=True))
        took = time.perf_counter() - started
        await asyncio.sleep(0.3)
    print(f"\n1,000 rows x 10 new categories: {took:.2f} s; the other organization made {len(other.answers)} requests")
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["rejected"]) == (1000, 0), report["errors"][:2]
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Category)) == 10_000
        assert await session.scalar(select(func.count()).select_from(contact_category)) == 10_000
    failures = [a for a in other.answers if not 200 <= a[1] < 300]
    assert not failures, failures[:3]
    assert len(other.answers) >= 4
    assert took < 15
