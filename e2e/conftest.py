"""End-to-end fixtures: a real Voluble server in a subprocess, driven by a real Chromium (Playwright).

The server gets its own SQLite database and var directory under a temporary directory, is migrated
and given a sysadmin through the CLI exactly as an operator would, and is killed at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
REDIS_URL = os.environ.get("VOLUBLE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CHROMIUM = os.environ.get("VOLUBLE_E2E_CHROMIUM", "/usr/bin/chromium")
SECRET_KEY = "e2e-secret-key-" + "k" * 40
START_TIMEOUT = 60


@dataclass(frozen=True)
class Server:
    url: str
    sysadmin_email: str
    sysadmin_password: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _voluble() -> list[str]:
    """The ``voluble`` console script of this environment (what ``uv run voluble`` runs)."""
    script = Path(sys.executable).parent / "voluble"
    if script.exists():
        return [str(script)]
    uv = shutil.which("uv")
    if uv:
        return [uv, "run", "voluble"]
    return [sys.executable, "-c", "from app.__main__ import main; main()"]


def _cli(command: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        lines = (done.stdout + done.stderr).strip().splitlines()
        errors = list(dict.fromkeys(line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)))
        detail = "\n".join([*errors, "...", *lines[-8:]])
        pytest.fail(f"`voluble {' '.join(command[1:4])} ...` failed ({done.returncode}):\n{detail}", pytrace=False)


def _wait_for_health(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer /health within {START_TIMEOUT}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("e2e-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOLUBLE_")},
        "VOLUBLE_VAR_DIR": str(tmp),
        "VOLUBLE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'e2e.db'}",
        "VOLUBLE_REDIS_URL": REDIS_URL,
        "VOLUBLE_SECRET_KEY": SECRET_KEY,
        "VOLUBLE_PUBLIC_URL": url,
        "VOLUBLE_LOG_LEVEL": "INFO",
    }
    # Failed logins are counted in Redis per account and per IP: start from a clean slate.
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = list(redis.scan_iter("voluble:login-fail:*"))
        if keys:
            redis.delete(*keys)
    finally:
        redis.close()

    email = f"root-{uuid.uuid4().hex[:8]}@e2e.example"
    password = "sysadmin e2e password"
    voluble = _voluble()
    _cli([*voluble, "database", "upgrade", "--no-prompt"], env)
    sysadmin = ["users", "create-sysadmin", "--email", email, "--password", password, "--name", "Sam Sysadmin"]
    _cli([*voluble, *sysadmin], env)
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*voluble, "run", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_health(url, proc, log)
        yield Server(url=url, sysadmin_email=email, sysadmin_password=password, log=log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture(scope="session")
def base_url(server: Server) -> str:
    """pytest-playwright resolves relative ``page.goto`` paths against this."""
    return server.url


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS

