"""Small helpers for tests that run real processes."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.embedded_redis import free_port

if TYPE_CHECKING:
    from app.config import Settings

__all__ = ["free_port", "start_worker", "stop_process", "wait_for", "worker_env"]


async def wait_for(condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.1) -> None:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker process that shares the test's database, Redis server and queues."""
    import os

    return {
        **os.environ,
        "VOLUBLE_DATABASE_URL": settings.database.url,
        "VOLUBLE_REDIS_URL": settings.redis.url,
        "VOLUBLE_QUEUE_PREFIX": settings.redis.queue_prefix,
        "VOLUBLE_VAR_DIR": str(settings.var_dir),
        "VOLUBLE_SECRET_KEY": settings.security.secret_key,
        "VOLUBLE_PUBLIC_URL": settings.server.public_url,
        "VOLUBLE_ALLOW_PRIVATE_TARGETS": "true" if settings.security.allow_private_targets else "false",
        "VOLUBLE_SEND_TIMEOUT": str(settings.worker.send_timeout),
        "VOLUBLE_SWEEP_SECONDS": str(settings.worker.sweep_seconds),
        "VOLUBLE_STALE_SECONDS": str(settings.worker.stale_seconds),
        "VOLUBLE_HEARTBEAT_SECONDS": str(settings.worker.heartbeat_seconds),
        "VOLUBLE_RATE_MAX_WAIT": str(settings.worker.rate_max_wait),
        **extra,
    }


def start_worker(settings: Settings, **extra: str) -> subprocess.Popen[bytes]:
    import sys

    return subprocess.Popen([sys.executable, "-m", "app", "workers", "run"], env=worker_env(settings, **extra))


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)
