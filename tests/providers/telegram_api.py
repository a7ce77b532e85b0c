"""A Telegram Bot API on 127.0.0.1 (``/bot<token>/<method>``), and the updates Telegram POSTs.

Answers ``getMe``, ``setWebhook`` (recording ``url`` and ``secret_token``) and ``sendMessage`` as
the Bot API does: ``{"ok": true, "result": …}``, or ``{"ok": false, "error_code", "description"}``
(401 Unauthorized for a wrong token, 400 "Bad Request: chat not found" for an unknown chat, 403 for a
chat in :attr:`TelegramServer.blocked`). Parameters may come as JSON, form or query string.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from tests.providers.server import Callback, Recorded, RecordingServer, Reply

BOT_TOKEN = "123456789:AAExampleExampleExampleExample_-12"
BOT = {"id": 123456789, "is_bot": True, "first_name": "Voluble Test", "username": "voluble_test_bot"}
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")


@dataclass(frozen=True)
class Webhook:
    url: str
    secret_token: str | None


@dataclass(frozen=True)
class Sent:
    chat_id: int
    message_id: int
    text: str
    params: dict[str, Any]


def _fail(status: int, description: str) -> Reply:
    return Reply.json(status, {"ok": False, "error_code": status, "description": description})


def _ok(result: Any) -> Reply:
    return Reply.json(200, {"ok": True, "result": result})


def _params(request: Recorded) -> dict[str, Any]:
    params: dict[str, Any] = {k: v[-1] for k, v in request.query.items()}
    content_type = request.headers.get("content-type", "")
    if request.body and content_type.startswith("application/json"):
        params.update(json.loads(request.body))
    elif request.body:
        params.update(request.form)
    return params


class TelegramServer(RecordingServer):
    def __init__(self, token: str = BOT_TOKEN, bot: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.token = token
        self.bot = bot or dict(BOT)
        #: chats the bot may write to (a person who started it)
        self.chats: set[int] = set()
        #: chats whose person blocked the bot
        self.blocked: set[int] = set()
        self.webhook: Webhook | None = None
        self.sent: list[Sent] = []
        self._ids = itertools.count(1)

    def answer(self, request: Recorded) -> Reply:
        match = _PATH.match(request.path)
        if match is None:
            return _fail(404, "Not Found")
        if match["token"] != self.token:
            return _fail(401, "Unauthorized")
        params = _params(request)
        method = match["method"]
        if method == "getMe":
            return _ok(self.bot)
        if method == "setWebhook":
            return self._set_webhook(params)
        if method == "sendMessage":
            return self._send_message(params)
        return _fail(404, "Not Found: method not found")

    def _set_webhook(self, params: dict[str, Any]) -> Reply:
        url = params.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return _fail(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not (isinstance(secret, str) and _SECRET.match(secret)):
            return _fail(400, "Bad Request: secret token contains unallowed characters")
        self.webhook = Webhook(url, secret)
        return Reply.json(200, {"ok": True, "result": True, "description": "Webhook was set"})

    def _send_message(self, params: dict[str, Any]) -> Reply:
        try:
            chat_id = int(params.get("chat_id", ""))
        except (TypeError, ValueError):
            return _fail(400, "Bad Request: chat not found")
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return _fail(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return _fail(400, "Bad Request: message is too long")
        if chat_id in self.blocked:
            return _fail(403, "Forbidden: bot was blocked by the user")
        if chat_id not in self.chats:
            return _fail(400, "Bad Request: chat not found")
        sent = Sent(chat_id, next(self._ids), text, params)
        self.sent.append(sent)
        return _ok(
            {
                "message_id": sent.message_id,
                "from": self.bot,
                "chat": {"id": chat_id, "first_name": "Steve", "type": "private"},
                "date": int(time.time()),
                "text": text,
            }
        )

    def update(
        self, chat_id: int, text: str, *, message_id: int | None = None, update_id: int | None = None
    ) -> Callback:
        """The update Telegram POSTs to the registered webhook when ``chat_id`` writes ``text``."""
        assert self.webhook is not None, "no webhook registered (setWebhook was not called)"
        body = message_update(chat_id, text, message_id=message_id, update_id=update_id)
        return update_callback(self.webhook.url, body, self.webhook.secret_token)


_UPDATE_IDS = itertools.count(10_000)


def message_update(
    chat_id: int, text: str, *, message_id: int | None = None, update_id: int | None = None
) -> dict[str, Any]:
    """A Bot API ``Update`` carrying a private text message."""
    return {
        "update_id": update_id if update_id is not None else next(_UPDATE_IDS),
        "message": {
            "message_id": message_id if message_id is not None else next(_UPDATE_IDS),
            "from": {"id": chat_id, "is_bot": False, "first_name": "Steve", "language_code": "en"},
            "chat": {"id": chat_id, "first_name": "Steve", "type": "private"},
            "date": int(time.time()),
            "text": text,
        },
    }


def update_callback(url: str, update: Any, secret_token: str | None) -> Callback:
    """How Telegram POSTs an update: JSON, with the webhook's secret in its header."""
    headers = {"Content-Type": "application/json"}
    if secret_token is not None:
        headers[SECRET_HEADER] = secret_token
    return Callback(url, json.dumps(update).encode(), headers)
