"""CSV import under load, with real parts: a server process, a SAQ worker, both databases.

The import runs in a real server (uvicorn, as deployed) while this process and a worker write to
the same database; hostile files are refused while ``/health`` keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, text

from app.config import Settings
from app.contacts import csvio
from app.contacts.models import Category, contact_category
from app.contacts.services import ContactService
from app.db.config import is_busy_error
from app.errors import classify
from app.messaging.models import Message, MessageState
from app.tenants.models import Role
from tests.conftest import World, bearer
from tests.helpers import free_port, stop_process, worker_env
from tests.pipeline import Tenant, fast_settings, new_contact, send, setup_chain, tenant, wait_final

API = "/api/v1"


PREFIX = f"t{uuid.uuid4().hex[:10]}"  # the queues of this module's servers and workers


@pytest.fixture
def settings(settings: Settings) -> Settings:
    fast = fast_settings(settings)
    return dataclasses.replace(fast, redis=dataclasses.replace(fast.redis, queue_prefix=PREFIX))


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, tuple[str, subprocess.Popen[bytes]]]]:
    """One real server per database for the whole module (starting one costs more than its tests)."""
    started: dict[str, tuple[str, subprocess.Popen[bytes]]] = {}
    yield started
    for _, proc in started.values():
        stop_process(proc)


@pytest.fixture
def live_url(servers: dict[str, tuple[str, subprocess.Popen[bytes]]], settings: Settings, engine: Any) -> str:
    """A real server (``voluble run``: uvicorn) on this test's database, Redis and queues."""
    if settings.database.url in servers:
        url, proc = servers[settings.database.url]
        assert proc.poll() is None, "the server exited"
        return url
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--host", "127.0.0.1", "--port", str(port)],
        env=worker_env(settings, VOLUBLE_PUBLIC_URL=url, VOLUBLE_LOG_LEVEL="WARNING"),
    )
    servers[settings.database.url] = (url, proc)
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)


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
    t = await tenant(world, api_rate_limit=1_000_000)  # the Sender posts with one token as fast as it can (0034)
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
    assert after > before, "the worker sent nothing during the import: this proves nothing"
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
            try:
                ok = (await live.get("/health", timeout=1)).status_code == 200
            except httpx.TimeoutException:
                ok = False
            latencies.append(time.perf_counter() - started if ok else float("inf"))
            await asyncio.sleep(0.05)

    async def refuse() -> tuple[httpx.Response | None, float]:
        started = time.perf_counter()
        try:
            return await upload(live, t.user, hostile, timeout=10), time.perf_counter() - started
        except httpx.TimeoutException:
            return None, time.perf_counter() - started
        finally:
            done.set()

    watcher = asyncio.create_task(watch_health())
    response, took = await refuse()
    await watcher
    print(f"\n40,000-column header refused in {took:.3f} s; /health at most {max(latencies):.3f} s meanwhile")
    assert response is not None, f"no answer within {took:.0f} s"
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


# ---------------------------------------------------------------- caps and reasons (in process)


async def test_the_column_and_category_caps_are_named(client: AsyncTestClient[Any], world: World) -> None:
    t = await tenant(world)
    wide = ("first_name," + ",".join(f"extra{i}" for i in range(csvio.MAX_COLUMNS)) + "\nAda\n").encode()
    refused = await upload(client, t.user, wide)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert f"{csvio.MAX_COLUMNS + 1} columns" in detail and f"at most {csvio.MAX_COLUMNS}" in detail
    trailing = ("first_name,email" + "," * 5000 + "\nAda,ada@example.com\n").encode()  # spreadsheets pad so
    assert (await upload(client, t.user, trailing)).json()["created"] == 1

    per_row = 5
    rows = csvio.MAX_CATEGORIES_PER_FILE // per_row + 1
    many = rows_csv(rows, categories=per_row, distinct=True)
    refused = await upload(client, t.user, many)
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert f"{rows * per_row} different categories" in body["detail"], body
    assert f"at most {csvio.MAX_CATEGORIES_PER_FILE}" in body["detail"] and body["errors"][0]["field"] == "file"
    listed = await client.get(f"{API}/categories", headers=t.user)
    assert listed.json()["total"] == 0  # refused before anything was written

    # the page runs the same import: the same refusal, in the form
    from tests.test_web_pages import csrf, login

    member = await world.user(await world.org(), Role.USER)
    await login(client, member.email)
    token = await csrf(client, "/contacts/import")
    page = await client.post(
        "/contacts/import", data={"_csrf_token": token}, files={"file": ("wide.csv", wide, "text/csv")}
    )
    assert page.status_code == 422 and f"at most {csvio.MAX_COLUMNS}" in page.text and 'id="e-file"' in page.text


REFUSE_ON_SQLITE = """
CREATE TRIGGER refuse_blocked BEFORE INSERT ON contact WHEN NEW.surname = 'Blocked'
BEGIN SELECT RAISE(ABORT, 'refused by a database rule'); END
"""
REFUSE_ON_POSTGRES = [
    """CREATE FUNCTION refuse_blocked() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.surname = 'Blocked' THEN
        RAISE EXCEPTION 'refused by a database rule' USING ERRCODE = 'check_violation';
      END IF;
      RETURN NEW;
    END $$""",
    "CREATE TRIGGER refuse_blocked BEFORE INSERT ON contact FOR EACH ROW EXECUTE FUNCTION refuse_blocked()",
]


async def test_a_row_the_database_refuses_is_reported_with_a_reason_and_logged(
    client: AsyncTestClient[Any], world: World, engine: Any, db_backend: str
) -> None:
    """A rule of the database itself (a trigger here) refuses one row: the others are saved, the row is
    reported with a reason to act on, and the database's error is logged with the row number."""
    t = await tenant(world)
    statements = [REFUSE_ON_SQLITE] if db_backend == "sqlite" else REFUSE_ON_POSTGRES
    async with engine.begin() as conn:
        for statement in statements:
            await conn.exec_driver_sql(statement)
    try:
        content = (
            "first_name,surname,email\n"
            "Ann,Archer,ann@example.com\n"
            "Bob,Blocked,bob.blocked@example.com\n"  # line 3
            "Cy,Cooper,cy@example.com\n"
        )
        with structlog.testing.capture_logs() as logs:
            report = (await upload(client, t.user, content.encode())).json()
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "DROP TRIGGER refuse_blocked" + (" ON contact" if db_backend != "sqlite" else "")
            )
            if db_backend != "sqlite":
                await conn.exec_driver_sql("DROP FUNCTION refuse_blocked()")
    assert (report["created"], report["rejected"]) == (2, 1), report
    assert report["errors"] == [{"row": 3, "errors": {"_row": csvio.CONFLICT}}]
    assert "could not be saved" not in csvio.CONFLICT and "Check the row" in csvio.CONFLICT
    logged = [e for e in logs if e["event"] == "csv import: row refused by the database"]
    assert len(logged) == 1 and logged[0]["row"] == 3 and logged[0]["log_level"] == "warning", logs
    assert "refused by a database rule" in logged[0]["error"]
    assert "bob.blocked@example.com" not in str(logged[0])  # the database's message, not the row's data


# ---------------------------------------------------------------- a busy database: 503, never 500


@contextlib.asynccontextmanager
async def locked(db_url: str, *tables: str) -> AsyncIterator[None]:
    """Another connection holds the write lock (SQLite) or these tables (PostgreSQL) meanwhile."""
    if db_url.startswith("sqlite"):
        holder = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        async with conn.transaction():
            for table in tables:
                await conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")  # reads pass, writes wait
            yield
    finally:
        await conn.close()


async def test_busy_database_errors_are_classified_503(world: World, sessions: Any, db_url: str) -> None:
    """The errors the two databases really raise when a lock is not granted in time (SQLite's
    "database is locked", PostgreSQL's lock_not_available), raw or wrapped by the repository."""
    org = await world.org()
    async with locked(db_url, "contact"), sessions() as session:
        await session.execute(
            text("PRAGMA busy_timeout=0" if db_url.startswith("sqlite") else "SET lock_timeout = '50ms'")
        )
        await session.commit()
        with pytest.raises(Exception) as wrapped:
            await ContactService(session=session, organization_id=org.id).create({"first_name": "Ada"})
        await session.rollback()
        with pytest.raises(Exception) as raw:
            await session.execute(text("DELETE FROM contact"))
        await session.rollback()
    for exc in (wrapped.value, raw.value):
        assert is_busy_error(exc), repr(exc)
        status, detail, _, headers = classify(exc)
        assert (status, headers) == (503, {"Retry-After": "2"}) and "busy" in detail, (exc, status)
    async with sessions() as session:  # an error of the statement itself is not "busy"
        with pytest.raises(Exception) as other:
            await session.execute(text("SELECT * FROM no_such_table"))
    assert not is_busy_error(other.value) and classify(other.value)[0] == 500


async def test_a_locked_database_answers_503_and_tokens_still_authenticate(
    settings: Settings, world: World, db_backend: str, db_url: str, engine: Any
) -> None:
    """While another connection holds the contacts (and tokens) for longer than a request waits: reads
    and authentication work, writes answer 503 with Retry-After, pages say so, an import reports every
    row as not saved with what to do, and nothing answers 500."""
    if db_backend == "sqlite":
        pytest.skip("SQLite waits busy_timeout (15 s) first; the mapping is proven by the test above")
    from app.asgi import create_app
    from tests.test_web_pages import csrf, login

    name = db_url.rsplit("/", 1)[1]
    async with engine.begin() as conn:  # the app's connections, all opened below, give up after 200 ms
        await conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET lock_timeout = '200ms'")
    try:
        t = await tenant(world)
        async with AsyncTestClient(app=create_app(settings)) as client:
            contact = await new_contact(client, t)
            member = await world.user(await world.org(), Role.USER)
            fresh = bearer(await world.token(member))  # never used: its first request stamps last_used_at
            await login(client, member.email)
            token = await csrf(client, "/contacts/new")
            setup = bearer(await world.token(member))
            own = (await client.post(f"{API}/contacts", json={"first_name": "Own"}, headers=setup)).json()["id"]
            async with locked(db_url, "contact", "access_token"):
                listed = await client.get(f"{API}/contacts", headers=fresh)
                made = await client.post(f"{API}/contacts", json={"first_name": "Ada"}, headers=t.user)
                imported = await upload(client, t.user, rows_csv(3))
                edited = await client.post(
                    f"/contacts/{own}/edit", data={"first_name": "Bea", "_csrf_token": token}, follow_redirects=False
                )
            assert listed.status_code == 200, listed.text  # the last_used_at stamp waits for a later request
            assert made.status_code == 503 and made.headers["retry-after"] == "2", made.text
            assert made.headers["content-type"].startswith("application/problem+json")
            assert "busy" in made.json()["detail"]
            assert imported.status_code == 200, imported.text
            report = imported.json()
            assert report["created"] == 0 and [e["errors"] for e in report["errors"]] == [{"_row": csvio.BUSY}] * 3
            assert edited.status_code == 503 and "very busy" in edited.text and edited.headers["retry-after"] == "2"
            after = await client.get(f"{API}/contacts/{contact}", headers=t.user)
            assert after.status_code == 200
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'ALTER DATABASE "{name}" RESET lock_timeout')
