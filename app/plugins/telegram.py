"""The ``telegram`` service: a bot, through the Telegram Bot API (``{api_base}/bot{token}/{method}``).

- Credentials check: ``getMe``. Then :meth:`TelegramPlugin.prepare_credentials` (called by the host
  with the organization's id) calls ``getMe`` for the bot's username and ``setWebhook`` with
  ``url={public_url}/hooks/telegram/{organization_id}`` and a ``secret_token`` generated for this
  organization; the credentials stored keep ``webhook_secret``, ``webhook_url`` and ``bot_username``.
- Send: ``sendMessage`` with the contact's ``telegram_chat_id``; the provider id is
  ``<chat_id>:<message_id>``. Telegram's acceptance is delivery to the intermediary
  (``accepted_state = MSG_DELIVERED_SERVICE``); the Bot API gives no later receipts.
- Updates on ``/hooks/telegram/{organization_id}`` carry ``X-Telegram-Bot-Api-Secret-Token``
  (compared in constant time with the kept secret). A text message → :class:`Inbound` (address: the
  chat id; provider id ``<chat_id>:<message_id>``); ``/start <token>`` (the person opened
  :func:`start_link`) → :class:`Link`. Other updates are acknowledged and ignored.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

import msgspec

from app.plugins.base import (
    CredentialsError,
    Inbound,
    Link,
    OutgoingMessage,
    Parsed,
    PayloadError,
    PayloadTooLarge,
    PluginContext,
    PluginError,
    PluginInfo,
    SelfTestError,
    SendError,
    SignatureError,
    WebhookRequest,
)
from app.plugins.httpapi import Answer, check_api_base, clip
from app.plugins.httpapi import call as call_api
from app.plugins.transport import guarded_transport

NAME = "telegram"
API_BASE = "https://api.telegram.org"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_BODY = 256 * 1024
MAX_TEXT = 4096
#: a ``/start`` payload: what Telegram lets a deep link carry
START_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_START = re.compile(r"^/start(?:@[A-Za-z0-9_]{1,64})?(?:\s+(\S+))?\s*$")


class TelegramCredentials(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    bot_token: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$",
            description="The bot's token from @BotFather (123456:ABC…).",
            extra_json_schema={"writeOnly": True, "format": "password"},
        ),
    ]
    api_base: Annotated[str, msgspec.Meta(min_length=10, max_length=300, description="Base URL of the Bot API.")] = (
        API_BASE
    )
    webhook_secret: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=r"^[A-Za-z0-9_-]{1,256}$",
                description="Generated when the credentials are saved; every update must carry it.",
                extra_json_schema={"readOnly": True},
            ),
        ]
        | None
    ) = None
    webhook_url: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=2048, description="The URL registered with setWebhook.", extra_json_schema={"readOnly": True}
            ),
        ]
        | None
    ) = None
    bot_username: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=64, description="The bot's username, from getMe.", extra_json_schema={"readOnly": True}
            ),
        ]
        | None
    ) = None

    def __repr__(self) -> str:
        return f"TelegramCredentials(bot_token=***, api_base={self.api_base!r}, bot_username={self.bot_username!r})"


def hook_url(public_url: str, organization_id: UUID | str) -> str:
    """The URL registered with ``setWebhook`` for an organization."""
    return f"{public_url.rstrip('/')}/hooks/{NAME}/{organization_id}"


def start_link(credentials: TelegramCredentials, token: str) -> str | None:
    """``https://t.me/<bot username>?start=<token>``; None before the bot's username is known."""
    if not credentials.bot_username:
        return None
    if not START_TOKEN.match(token):
        raise ValueError("A start token is 1-64 characters A-Z a-z 0-9 _ -.")
    return f"https://t.me/{credentials.bot_username}?start={token}"


def _description(answer: Answer) -> str:
    data = answer.data
    if isinstance(data, dict) and data.get("description"):
        return clip(data["description"])
    return f"Telegram answered HTTP {answer.status}."


def _ok_result(answer: Answer) -> Any:
    """The ``result`` of an ``{"ok": true}`` answer; :class:`PluginError` with Telegram's description else."""
    data = answer.data
    if isinstance(data, dict) and data.get("ok") is True and 200 <= answer.status < 300:
        return data.get("result")
    raise PluginError(_description(answer))


class TelegramPlugin:
    info: ClassVar[PluginInfo] = PluginInfo(
        name=NAME,
        title="Telegram bot",
        address_field="telegram_chat_id",
        credentials_type=TelegramCredentials,
        max_length=MAX_TEXT,
        rate_per_second=30.0,
        accepted_state="MSG_DELIVERED_SERVICE",
        description="Messages from your Telegram bot; replies come back through its webhook.",
    )

    def __init__(self, context: PluginContext) -> None:
        self.context = context

    async def self_test(self) -> None:
        try:
            transport = guarded_transport(self.context.allow_private_targets)
        except Exception as exc:
            raise SelfTestError(f"Cannot build the guarded HTTP transport: {exc}") from exc
        await transport.aclose()

    async def _call(
        self, credentials: TelegramCredentials, method: str, payload: dict[str, Any] | None = None
    ) -> Answer:
        base = check_api_base(credentials.api_base)
        return await call_api(
            self.context,
            "POST",
            f"{base}/bot{credentials.bot_token}/{method}",
            provider="Telegram",
            json=payload or {},
            redact=credentials.bot_token,
        )

    async def _get_me(self, credentials: Any) -> dict[str, Any]:
        if not isinstance(credentials, TelegramCredentials):
            raise CredentialsError("Telegram credentials expected.")
        try:
            answer = await self._call(credentials, "getMe")
        except CredentialsError:
            raise
        except PluginError as exc:
            raise CredentialsError(str(exc)) from exc
        if answer.status == 401 or (isinstance(answer.data, dict) and answer.data.get("error_code") == 401):
            raise CredentialsError("Telegram refused the bot token (401 Unauthorized).")
        try:
            me = _ok_result(answer)
        except PluginError as exc:
            raise CredentialsError(f"getMe failed: {exc}") from exc
        if not isinstance(me, dict) or not isinstance(me.get("username"), str):
            raise CredentialsError("Telegram's getMe answer names no bot username.")
        return me

    async def validate_credentials(self, credentials: Any) -> None:
        await self._get_me(credentials)

    async def prepare_credentials(self, credentials: Any, organization_id: UUID) -> TelegramCredentials:
        """Register the organization's webhook with a new secret; the credentials to store."""
        me = await self._get_me(credentials)
        username = str(me["username"])[:64]
        url = hook_url(self.context.public_url, organization_id)
        secret = secrets.token_urlsafe(32)
        try:
            answer = await self._call(credentials, "setWebhook", {"url": url, "secret_token": secret})
            _ok_result(answer)
        except CredentialsError:
            raise
        except PluginError as exc:
            raise CredentialsError(f"Telegram refused the webhook {url}: {exc}") from exc
        return msgspec.structs.replace(credentials, webhook_secret=secret, webhook_url=url, bot_username=username)

    async def send(self, message: OutgoingMessage, address: str | None, credentials: Any) -> str:
        if not isinstance(credentials, TelegramCredentials):
            raise SendError("The organization has no Telegram credentials.")
        if not address:
            raise SendError("The contact has no Telegram chat id (they have not linked Telegram yet).")
        payload: dict[str, Any] = {"chat_id": address, "text": message.content}
        reply = message.reply_to_provider_id
        if reply and reply.startswith(f"{address}:") and reply.rsplit(":", 1)[1].isdigit():
            payload["reply_parameters"] = {
                "message_id": int(reply.rsplit(":", 1)[1]),
                "allow_sending_without_reply": True,
            }
        try:
            result = _ok_result(await self._call(credentials, "sendMessage", payload))
        except PluginError as exc:
            raise SendError(str(exc)) from exc
        if not isinstance(result, dict) or not isinstance(result.get("message_id"), int):
            raise SendError("Telegram's sendMessage answer has no message_id.")
        chat = result.get("chat")
        chat_id = chat.get("id") if isinstance(chat, dict) else None
        return f"{chat_id if isinstance(chat_id, int) else address}:{result['message_id']}"

    async def parse_webhook(self, request: WebhookRequest, credentials: Any) -> Sequence[Parsed]:
        if not isinstance(credentials, TelegramCredentials) or not credentials.webhook_secret:
            raise SignatureError("No Telegram webhook is registered for this organization.")
        given = {k.lower(): v for k, v in request.headers.items()}.get(SECRET_HEADER.lower(), "")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), credentials.webhook_secret.encode()):
            raise SignatureError(f"The {SECRET_HEADER} header does not match.")
        if len(request.body) > MAX_BODY:
            raise PayloadTooLarge(f"The update is larger than {MAX_BODY // 1024} KiB.")
        try:
            update = msgspec.json.decode(request.body)
        except msgspec.DecodeError as exc:
            raise PayloadError("The update is not JSON.") from exc
        if not isinstance(update, dict):
            raise PayloadError("The update is not a JSON object.")
        return _interpret(update)


def _interpret(update: dict[str, Any]) -> list[Parsed]:
    message = update.get("message")
    if not isinstance(message, dict):
        return []  # edited messages, channel posts, callbacks…: acknowledged, nothing changes
    chat = message.get("chat")
    chat_id = chat.get("id") if isinstance(chat, dict) else None
    message_id = message.get("message_id")
    text = message.get("text")
    if not isinstance(chat_id, int) or isinstance(chat_id, bool) or not isinstance(text, str):
        return []  # a photo, a sticker, a service message: nothing to store as text
    if isinstance(message_id, int) and not isinstance(message_id, bool):
        provider_id = f"{chat_id}:{message_id}"
    elif isinstance(update.get("update_id"), int):
        provider_id = f"update:{update['update_id']}"
    else:
        raise PayloadError("The update has neither a message_id nor an update_id.")
    date = message.get("date")
    at = datetime.fromtimestamp(date, UTC) if isinstance(date, int) and 0 < date < 2**33 else None
    start = _START.match(text)
    if start and start.group(1) and START_TOKEN.match(start.group(1)):
        return [Link(token=start.group(1), address=str(chat_id), provider_message_id=provider_id, at=at)]
    return [Inbound(address=str(chat_id), content=text[:MAX_TEXT], provider_message_id=provider_id, at=at)]
