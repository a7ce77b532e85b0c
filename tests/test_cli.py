"""The command line as an operator uses it: real processes, a real SQLite file, the embedded Redis."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port

VOLUBLE = [sys.executable, "-m", "app"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLUBLE_")}
    env.update({"VOLUBLE_VAR_DIR": str(tmp_path), "VOLUBLE_SECRET_KEY": "cli-test-secret-" + "y" * 32, **extra})
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VOLUBLE, *args], env=env, capture_output=True, text=True, timeout=120)


def test_upgrade_create_sysadmin_and_token(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert run(["database", "upgrade", "--no-prompt"], env).returncode == 0
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


def test_up_runs_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path, VOLUBLE_PORT=str(port))
    proc = subprocess.Popen([*VOLUBLE, "up"], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    banner: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            banner.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(banner)
        url = re.search(r"Voluble is up at (http://\S+)", text)
        login = re.search(r"login:\s+(\S+)\n\s+password:\s+(\S+)", text)
        redis_url = re.search(r"embedded Redis on (redis://\S+)", text)
        assert url and login and redis_url, text
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
        login_page = httpx.get(f"{base}/login", timeout=5)
        assert login_page.status_code == 200 and 'name="password"' in login_page.text
        # the printed login is a real sysadmin: a token made for it works on the API
        token = run(["tokens", "create", "--email", login.group(1)], env).stdout.strip()
        me = httpx.get(f"{base}/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert me.status_code == 200 and me.json()["role"] == "sysadmin"
        import sqlite3

        # the demo organization sends through its default chain on the workers `up` started
        demo = re.search(r"demo org admin: (\S+) / (\S+)", text)
        assert demo, text
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
        from app.tenants.security import verify_password  # the printed password matches the stored hash

        row = sqlite3.connect(tmp_path / "voluble.db").execute(
            "select password_hash from user_account where email = ?", (login.group(1),)
        ).fetchone()
        assert verify_password(row[0], login.group(2))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("voluble up did not stop on Ctrl-C")
    # everything it started is gone: the web port and the embedded Redis no longer answer
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/health", timeout=2)
    redis_port = int(redis_url.group(1).rsplit(":", 1)[1].split("/")[0])
    import socket

    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", redis_port), timeout=1):
        pass
