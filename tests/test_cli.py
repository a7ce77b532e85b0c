"""The command line as an operator uses it: real processes, a real SQLite file, the embedded Redis."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.tenants.security import verify_password
from tests.helpers import free_port
from tests.test_migrations import empty_database  # noqa: F401  (a fixture: a fresh SQLite file or PostgreSQL database)

VOLUBLE = [sys.executable, "-m", "app"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLUBLE_")}
    env.update({"VOLUBLE_VAR_DIR": str(tmp_path), "VOLUBLE_SECRET_KEY": "cli-test-secret-" + "y" * 32, **extra})
    return env


def run(
    args: list[str], env: dict[str, str], stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """Run a command as a deployment script does: no terminal (stdin is /dev/null)."""
    return subprocess.run([*VOLUBLE, *args], env=env, stdin=stdin, capture_output=True, text=True, timeout=120)


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def test_database_upgrade_asks_nothing_without_a_terminal(tmp_path: Path, empty_database: str) -> None:  # noqa: F811
    env = _env(tmp_path, VOLUBLE_DATABASE_URL=empty_database)
    asked = run(["database", "upgrade", "--prompt"], env)  # asking needs a terminal: it aborts, changes nothing
    assert asked.returncode != 0 and "Migrate the database" in asked.stdout + asked.stderr
    assert await _tables(empty_database) == set()
    done = run(["database", "upgrade"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"alembic_version", "organization", "user_account", "contact", "message"} <= await _tables(empty_database)


def test_upgrade_create_sysadmin_and_token(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert run(["database", "upgrade", "--no-prompt"], env).returncode == 0  # the flag of before still works
    created = run(["users", "create-sysadmin", "--email", "Root@Example.com", "--password", "a long password"], env)
    assert created.returncode == 0, created.stderr
    short = run(["users", "create-sysadmin", "--email", "x@example.com", "--password", "short"], env)
    assert short.returncode != 0 and "at least" in short.stderr
    token = run(["tokens", "create", "--email", "root@example.com", "--scopes", "contacts:read users:admin"], env)
    assert token.returncode == 0, token.stderr
    assert re.fullmatch(r"vol_pat_[A-Za-z0-9_-]{40,}\n", token.stdout), token.stdout  # alone on stdout
    unknown = run(["tokens", "create", "--email", "nobody@example.com"], env)
    assert unknown.returncode != 0 and "no user" in unknown.stderr
    bad_scope = run(["tokens", "create", "--email", "root@example.com", "--scopes", "everything:all"], env)
    assert bad_scope.returncode != 0 and "Unknown scopes" in bad_scope.stderr


class Output:
    """Everything a process writes (stdout and stderr), read as it comes so the pipe never fills."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.lines: list[str] = []
        self._stream = proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, marker: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while marker not in self.text:
            assert time.monotonic() < deadline and self._thread.is_alive(), f"no {marker!r} in:\n{self.text}"
            time.sleep(0.1)
        return self.text

    def close(self) -> None:
        self._thread.join(timeout=10)


def _login(http: httpx.Client, email: str, password: str) -> httpx.Response:
    page = http.get("/login")
    token = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token, page.text[:300]
    return http.post("/login", data={"email": email, "password": password, "_csrf_token": token.group(1)})


def test_up_runs_everything_and_ctrl_c_stops_it_in_order(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path, VOLUBLE_PORT=str(port), VOLUBLE_METRICS_TOKEN="cli-metrics-" + "m" * 24)
    stale = tmp_path / "metrics" / "counter_4190000.db"  # an earlier run's: `up` empties the directory
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    # its own process group, as a shell gives a foreground job: Ctrl-C is SIGINT to the whole group
    proc = subprocess.Popen(
        [*VOLUBLE, "up"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    output = Output(proc)
    try:
        text = output.wait_for("Press Ctrl-C", timeout=60)
        deadline = time.monotonic() + 90  # start-up, sign-in and throttle checks, a send, a scrape: slow under CI load
        url = re.search(r"Voluble is up at (http://\S+)", text)
        login = re.search(r"login:\s+(\S+)\n\s+password:\s+(\S+)", text)
        redis_url = re.search(r"embedded Redis on (redis://\S+)", text)
        demo = re.search(r"demo org admin: (\S+) / (\S+)", text)
        assert url and login and redis_url and demo, text
        base = url.group(1).rstrip("/")
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{base}/ready", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, ready and ready.text
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}

        # the login page on the embedded Redis (6.2): the printed login works; a wrong password is the
        # form's error, never a 500, and repeated failures are throttled with 429
        with httpx.Client(base_url=base, timeout=10) as browser:
            signed_in = _login(browser, login.group(1), login.group(2))
            assert signed_in.status_code == 303 and signed_in.headers["location"] == "/", signed_in.text[:300]
        with httpx.Client(base_url=base, timeout=10) as browser:
            for _ in range(5):  # VOLUBLE_LOGIN_MAX_FAILURES
                wrong = _login(browser, demo.group(1), "not the password")
                assert wrong.status_code == 400 and "Wrong email or password." in wrong.text, wrong.text[:300]
            throttled = _login(browser, demo.group(1), demo.group(2))  # even the right password waits
            assert throttled.status_code == 429 and "Too many failed logins" in throttled.text
            assert int(throttled.headers["retry-after"]) > 0

        # the printed login is a real sysadmin: a token made for it works on the API
        token = run(["tokens", "create", "--email", login.group(1)], env).stdout.strip()
        me = httpx.get(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert me.status_code == 200 and me.json()["role"] == "sysadmin"

        # the demo organization sends through its default chain on the workers `up` started
        demo_token = run(["tokens", "create", "--email", demo.group(1)], env).stdout.strip()
        auth = {"Authorization": f"Bearer {demo_token}"}
        chains = httpx.get(f"{base}/api/v1/servicechains", headers=auth, timeout=5).json()["items"]
        assert [c["services"] for c in chains] == [["log"]]
        contact = httpx.post(f"{base}/api/v1/contacts", json={"first_name": "Ada"}, headers=auth, timeout=5).json()
        sent = httpx.post(
            f"{base}/api/v1/messages",
            json={"contact_id": contact["id"], "servicechain_id": chains[0]["id"], "content": "Hi {{ first_name }}"},
            headers=auth,
            timeout=10,
        ).json()
        state = sent["state"]
        while state != "MSG_SENT" and time.monotonic() < deadline:
            time.sleep(0.2)
            state = httpx.get(f"{base}/api/v1/messages/{sent['id']}", headers=auth, timeout=5).json()["state"]
        assert state == "MSG_SENT"
        assert "Hi Ada" in (tmp_path / "outbox.jsonl").read_text()
        # the web server's /metrics adds up what its processes counted: the worker's attempt included
        assert not stale.exists()
        metrics_auth = {"Authorization": f"Bearer {env['VOLUBLE_METRICS_TOKEN']}"}
        scraped = ""
        while 'voluble_attempts_total{outcome="sent",service="log"} 1.0' not in scraped:
            assert time.monotonic() < deadline, scraped
            scraped = httpx.get(f"{base}/metrics", headers=metrics_auth, timeout=5).text
        assert 'voluble_messages_accepted_total{kind="single"} 1.0' in scraped
        row = (
            sqlite3.connect(tmp_path / "voluble.db")
            .execute("select password_hash from user_account where email = ?", (login.group(1),))
            .fetchone()
        )
        assert verify_password(row[0], login.group(2))  # the printed password matches the stored hash
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"voluble up did not stop on Ctrl-C:\n{output.text}")
        output.close()
    text = output.text
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "Error" not in text, text
    # in order: the web server (whose shutdown closes its Redis connections), the workers, then Redis
    stops = ["stopping the web server", "Application shutdown complete", "stopping the workers", "workers stopped"]
    stops += ["stopping the embedded Redis", "stopped"]
    at = text.find("Press Ctrl-C")
    for line in stops:
        at = text.find(line, at)
        assert at != -1, f"no {line!r} (in this order: {stops}) in:\n{text}"
    # each stopped process was marked dead: no live gauge of theirs is left in the metrics directory
    assert not list((tmp_path / "metrics").glob("gauge_live*.db"))
    # everything it started is gone: the web port and the embedded Redis no longer answer
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/health", timeout=2)
    redis_port = int(redis_url.group(1).rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", redis_port), timeout=1):
        pass
