"""Graceful shutdown of real processes (docs/decisions/0036): SIGTERM to a web process finishes the
request in flight; to a worker, lets the send in flight finish (or, past the grace period, puts it back
on its queue); ``voluble up`` stops web, workers, then the embedded Redis, without a traceback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from app.config import Settings
from app.contacts.models import Contact
from tests.conftest import World
from tests.helpers import free_port, stop_process, wait_for, worker_env
from tests.pipeline import HookServer, fast_settings, new_contact, send, setup_chain, tenant, wait_final

#: real processes are slow to start: these run on SQLite and the embedded Redis alone
sqlite_only = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_settings(settings)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A ``python -m app …`` process, its stdout and stderr in one pipe (read after it ends)."""
    return subprocess.Popen(
        [sys.executable, "-m", "app", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def ended(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(errors="replace")


def ended_after_sigterm(proc: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    return ended(proc, timeout)


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")[-3000:]
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered"
        time.sleep(0.2)


@sqlite_only
async def test_web_sigterm_finishes_the_request_in_flight(world: World, settings: Settings, sessions: Any) -> None:
    t = await tenant(world)
    port = free_port()
    web = spawn(["run", "--host", "127.0.0.1", "--port", str(port)], worker_env(settings))
    try:
        wait_http(f"http://127.0.0.1:{port}/health", web)
        body = json.dumps({"first_name": "Late", "surname": "Comer", "email": "late@example.com"}).encode()
        head = (
            f"POST /api/v1/contacts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: {t.user['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head + body[:10])  # the request is in flight: its body is still coming
            await asyncio.sleep(0.5)
            web.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            with pytest.raises(httpx.TransportError):  # no new connection is taken meanwhile
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            assert web.poll() is None, "the server did not wait for the request in flight"
            sock.sendall(body[10:])
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                assert chunk, answer
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
        code, out = ended(web, timeout=30)
    finally:
        stop_process(web)
    assert code == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    async with sessions() as session:
        assert await session.scalar(select(Contact.id).where(Contact.email == "late@example.com")) is not None


async def _webhook_message(client: AsyncTestClient[Any], world: World, hook_server: HookServer) -> tuple[Any, str]:
    t = await tenant(world)
    creds = {"url": hook_server.url, "secret": "0123456789abcdef"}
    r = await client.put("/api/v1/services/webhook/credentials", json=creds, headers=t.admin)
    assert r.status_code in (200, 204), r.text
    chain = await setup_chain(client, t, ["webhook"])
    contact = await new_contact(client, t)
    return t, (await send(client, t, contact, chain, "in flight"))["id"]


@sqlite_only
async def test_worker_sigterm_lets_the_send_in_flight_finish(
    client: AsyncTestClient[Any], world: World, settings: Settings, hook_server: HookServer
) -> None:
    hook_server.delay = 3.0
    slow = dataclasses.replace(settings, worker=dataclasses.replace(settings.worker, send_timeout=10.0))
    worker = spawn(["workers", "run"], worker_env(slow, VOLUBLE_SHUTDOWN_GRACE="15"))
    t, message_id = await _webhook_message(client, world, hook_server)
    second = None
    try:
        await wait_for(lambda: len(hook_server.requests) == 1, timeout=60)  # the send is in flight
        stopped_at = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code, out = ended(worker, timeout=30)
        took = time.monotonic() - stopped_at
        # it recorded the outcome before exiting (or queued it as an event: then the next worker applies it)
        second = spawn(["workers", "run"], worker_env(slow))
        final = await wait_final(client, t, message_id, timeout=60)
        hook_server.delay = 0.0
        after = await send(client, t, final["contact_id"], final["servicechain_id"], "after")
        assert (await wait_final(client, t, after["id"], timeout=60))["state"] == "MSG_SENT"  # the next one is up
        stopping = time.monotonic()
        second_code, second_out = ended_after_sigterm(second)
        idle_stop = time.monotonic() - stopping
    finally:
        stop_process(worker)
        if second is not None:
            stop_process(second)
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert 1.5 < took < 15, took  # it waited for the webhook's answer, not for the whole grace period
    assert final["state"] == "MSG_SENT" and final["service"] == "webhook", final
    assert [a["outcome"] for a in final["attempts"]] == ["sent"], final  # finished, not cut and retried
    assert len(hook_server.requests) == 2
    assert second_code == 0 and "Traceback" not in second_out, second_out[-3000:]
    assert idle_stop < 5, idle_stop  # an idle worker stops at once


@sqlite_only
async def test_worker_past_its_grace_period_puts_the_send_back(
    client: AsyncTestClient[Any], world: World, settings: Settings, hook_server: HookServer
) -> None:
    """The at-least-once window of a shutdown: a send still running when the grace period ends is
    cancelled and put back on its queue; the next worker sends it again (the receiver saw it twice)."""
    hook_server.delay = 8.0
    slow = dataclasses.replace(settings, worker=dataclasses.replace(settings.worker, send_timeout=10.0))
    worker = spawn(["workers", "run"], worker_env(slow, VOLUBLE_SHUTDOWN_GRACE="1"))
    t, message_id = await _webhook_message(client, world, hook_server)
    second = None
    try:
        await wait_for(lambda: len(hook_server.requests) == 1, timeout=60)
        stopped_at = time.monotonic()
        code, out = ended_after_sigterm(worker)
        took = time.monotonic() - stopped_at
        hook_server.delay = 0.0
        second = spawn(["workers", "run"], worker_env(slow))
        final = await wait_final(client, t, message_id, timeout=60)
    finally:
        stop_process(worker)
        if second is not None:
            stop_process(second)
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert took < 6, took  # the grace period (1 s), not the webhook's 8 s
    assert final["state"] == "MSG_SENT" and final["service"] == "webhook", final
    assert [a["outcome"] for a in final["attempts"]] == ["sent"], final  # the same attempt, run again
    assert len(hook_server.requests) == 2


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_stops_web_then_workers_then_redis(tmp_path: Path, stop_signal: signal.Signals) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLUBLE_")}
    env.update(
        VOLUBLE_VAR_DIR=str(tmp_path),
        VOLUBLE_PORT=str(port),
        VOLUBLE_SECRET_KEY="test-secret-" + "x" * 40,
        VOLUBLE_PASSWORD_HASH_TIME_COST="1",
        VOLUBLE_PASSWORD_HASH_MEMORY_KIB="64",
        VOLUBLE_PASSWORD_HASH_PARALLELISM="1",
    )
    up = spawn(["up", "--workers", "1"], env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", up, timeout=120)
        parts = psutil.Process(up.pid).children(recursive=True)
        assert len(parts) >= 3, parts  # the embedded Redis, a worker, the web server
        up.send_signal(stop_signal)
        code, out = ended(up, timeout=60)
    finally:
        stop_process(up)
    assert code == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    order = [
        out.index(line) for line in ("stopping the web server", "stopping the workers", "stopping the embedded Redis")
    ]
    assert order == sorted(order), out[-3000:]
    assert out.rstrip().endswith("stopped"), out[-3000:]
    assert not [p for p in parts if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], parts
