"""One webhook POST (``app.webhooks.delivery.post``, issue 11 item 1) against real local servers: a redirect
is not followed and is not a success; the outbound network guard refuses a private address unless it is
allowed; a 2xx is a success and only the first 1 KiB of the answer is kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.webhooks import delivery
from tests.webhooks_receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def redirector(receiver: Receiver) -> Iterator[str]:
    """An endpoint that answers every POST with a redirect to the receiver."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(307)
            self.send_header("Location", receiver.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


async def test_a_redirect_is_not_followed(redirector: str, receiver: Receiver) -> None:
    outcome = await delivery.post(redirector, b"{}", {"content-type": "application/json"}, allow_private=True)
    assert outcome.status_code == 307 and not outcome.ok
    assert receiver.requests == []  # the target of the redirect never saw the event


async def test_the_guard_and_a_success(receiver: Receiver) -> None:
    refused = await delivery.post(receiver.url, b"{}", {}, allow_private=False)
    assert refused.status_code is None and not refused.ok and refused.error
    assert receiver.requests == []
    ok = await delivery.post(receiver.url, b'{"type": "ping"}', {"webhook-id": "msg_1"}, allow_private=True)
    assert ok.ok and ok.status_code == 200 and ok.body is not None and len(ok.body.encode()) == delivery.KEEP
    assert receiver.requests[0][0]["webhook-id"] == "msg_1"
