"""A recording HTTP server on 127.0.0.1 (a free port) whose answers a subclass computes."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from app.plugins.base import WebhookRequest


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        """The form-encoded body, one value per name."""
        return {k: v[-1] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, data: Any) -> Reply:
        return cls(status, json.dumps(data).encode())


class RecordingServer:
    """Records each request in :attr:`requests` and answers with :meth:`answer` (override it)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Recorded(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with outer._lock:
                    outer.requests.append(request)
                reply = outer.answer(request)
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def answer(self, request: Recorded) -> Reply:
        return Reply(200)

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Receiver(RecordingServer):
    """Any request is answered ``status`` (200): a local endpoint for Apprise's ``json://`` and the like."""

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status

    def answer(self, request: Recorded) -> Reply:
        return Reply.json(self.status, {"ok": self.status < 400})


@dataclass(frozen=True)
class Callback:
    """A provider's callback, ready to be delivered: to a plugin (:meth:`request`) or over HTTP (:meth:`post`)."""

    url: str
    body: bytes
    headers: dict[str, str]

    @property
    def path(self) -> str:
        """Path and query of :attr:`url` (what a test client is given)."""
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def request(self) -> WebhookRequest:
        """What the host hands the plugin (its ``url`` is the URL as the provider called it)."""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.url).query).items()}
        return WebhookRequest("POST", self.url, dict(self.headers), query, self.body)

    def with_headers(self, **headers: str | None) -> Callback:
        """A copy with headers replaced (``None`` removes one): a forged or unsigned callback."""
        merged = {k: v for k, v in self.headers.items() if k not in headers}
        merged.update({k: v for k, v in headers.items() if v is not None})
        return Callback(self.url, self.body, merged)

    async def post(self, client: Any, path: str | None = None) -> Any:
        """POST it with ``client`` (an httpx.AsyncClient or Litestar's AsyncTestClient) to ``path`` (default :attr:`path`)."""
        return await client.post(path or self.path, content=self.body, headers=self.headers)
