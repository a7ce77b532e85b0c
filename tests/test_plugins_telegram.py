"""The ``telegram`` plugin against a local server that answers as the Telegram Bot API does.

No plugin code is patched: ``api_base`` points at :class:`TelegramServer` on 127.0.0.1
(``allow_private_targets`` on); updates are POSTed as Telegram posts them, with the webhook's secret.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.plugins.base import (
    ContactInfo,
    CredentialsError,
    Inbound,
    Link,
    OutgoingMessage,
    PayloadError,
    PayloadTooLarge,
    PluginContext,
    SendError,
    SignatureError,
    prepare_credentials,
)
from app.plugins.telegram import TelegramCredentials, TelegramPlugin, hook_url, start_link
from tests.providers.server import Callback
from tests.providers.telegram_api import BOT, BOT_TOKEN, TelegramServer, message_update, update_callback

PUBLIC_URL = "https://voluble.example.com"
ORG = uuid.UUID("00000000-0000-4000-8000-000000000002")
CHAT = 987654321


def context(tmp_path: Path, *, allow_private: bool = True) -> PluginContext:
    return PluginContext(var_dir=tmp_path, allow_private_targets=allow_private, public_url=PUBLIC_URL, send_timeout=5.0)


def creds(server: TelegramServer, **overrides: Any) -> TelegramCredentials:
    return msgspec.convert({"bot_token": BOT_TOKEN, "api_base": server.base_url, **overrides}, TelegramCredentials)


def outgoing(content: str = "Your table is ready", reply_to: str | None = None) -> OutgoingMessage:
    contact = ContactInfo(id=uuid.uuid4(), first_name="Steve", telegram_chat_id=str(CHAT))
    return OutgoingMessage(
        id=uuid.uuid4(), organization_id=ORG, content=content, contact=contact, reply_to_provider_id=reply_to
    )


@pytest.fixture
def telegram() -> Iterator[TelegramServer]:
    with TelegramServer() as server:
        server.chats.add(CHAT)
        yield server


@pytest.fixture
def plugin(tmp_path: Path) -> TelegramPlugin:
    return TelegramPlugin(context(tmp_path))


async def registered(plugin: TelegramPlugin, telegram: TelegramServer) -> TelegramCredentials:
    """What the host stores: validated, then prepared for the organization."""
    raw = creds(telegram)
    await plugin.validate_credentials(raw)
    prepared = await prepare_credentials(plugin, raw, ORG)
    assert isinstance(prepared, TelegramCredentials)
    return prepared


async def test_self_test_and_info(plugin: TelegramPlugin) -> None:
    await plugin.self_test()
    assert plugin.info.address_field == "telegram_chat_id"
    assert plugin.info.accepted_state == "MSG_DELIVERED_SERVICE"


async def test_credentials_check_calls_get_me(plugin: TelegramPlugin, telegram: TelegramServer) -> None:
    await plugin.validate_credentials(creds(telegram))
    [request] = telegram.requests
    assert request.path == f"/bot{BOT_TOKEN}/getMe"
    assert telegram.webhook is None  # validating alone registers nothing


async def test_wrong_token_is_refused_without_leaking_it(plugin: TelegramPlugin, telegram: TelegramServer) -> None:
    wrong = "123456789:" + "Z" * 35
    with pytest.raises(CredentialsError, match=r"refused the bot token \(401 Unauthorized\)") as refused:
        await plugin.validate_credentials(creds(telegram, bot_token=wrong))
    assert wrong not in str(refused.value)
    with pytest.raises(CredentialsError, match=r"refused the bot token"):
        await prepare_credentials(plugin, creds(telegram, bot_token=wrong), ORG)
    assert telegram.webhook is None
    with pytest.raises(msgspec.ValidationError, match="bot_token"):
        creds(telegram, bot_token="123/../sendMessage?x=")
    assert BOT_TOKEN not in repr(creds(telegram))


async def test_prepare_registers_the_webhook_with_a_new_secret(
    plugin: TelegramPlugin, telegram: TelegramServer
) -> None:
    prepared = await registered(plugin, telegram)

    assert telegram.webhook is not None
    assert telegram.webhook.url == f"{PUBLIC_URL}/hooks/telegram/{ORG}" == hook_url(PUBLIC_URL, ORG)
    assert telegram.webhook.secret_token == prepared.webhook_secret
    assert prepared.webhook_secret and len(prepared.webhook_secret) >= 32
    assert prepared.webhook_url == telegram.webhook.url
    assert prepared.bot_username == BOT["username"]
    assert prepared.bot_token == BOT_TOKEN and prepared.api_base == telegram.base_url
    assert start_link(prepared, "tok_123-x") == f"https://t.me/{BOT['username']}?start=tok_123-x"
    assert start_link(creds(telegram), "tok") is None  # before the username is known
    with pytest.raises(ValueError):
        start_link(prepared, "not a token!")
    # the stored form round-trips through the credentials type, and saving again rotates the secret
    stored = msgspec.convert(msgspec.to_builtins(prepared), TelegramCredentials)
    assert stored == prepared
    again = await registered(plugin, telegram)
    assert again.webhook_secret != prepared.webhook_secret and telegram.webhook.secret_token == again.webhook_secret


async def test_prepare_credentials_leaves_other_plugins_credentials_alone(tmp_path: Path) -> None:
    from app.plugins.log import LogPlugin
    from app.plugins.webhook import WebhookCredentials, WebhookPlugin

    webhook = msgspec.convert({"url": "http://127.0.0.1:1/x", "secret": "s" * 20}, WebhookCredentials)
    assert await prepare_credentials(WebhookPlugin(context(tmp_path)), webhook, ORG) is webhook
    assert await prepare_credentials(LogPlugin(context(tmp_path)), None, ORG) is None


async def test_send_calls_send_message(plugin: TelegramPlugin, telegram: TelegramServer) -> None:
    prepared = await registered(plugin, telegram)

    provider_id = await plugin.send(outgoing("Your table is ready"), str(CHAT), prepared)

    [sent] = telegram.sent
    assert provider_id == f"{CHAT}:{sent.message_id}"
    assert (sent.chat_id, sent.text) == (CHAT, "Your table is ready")
    assert telegram.requests[-1].path == f"/bot{BOT_TOKEN}/sendMessage"
    # a reply to a message of that chat is threaded under it
    await plugin.send(outgoing("And dessert?", reply_to=provider_id), str(CHAT), prepared)
    assert telegram.sent[-1].params["reply_parameters"]["message_id"] == sent.message_id


async def test_telegram_refusals_are_send_errors_with_the_description(
    plugin: TelegramPlugin, telegram: TelegramServer
) -> None:
    prepared = await registered(plugin, telegram)
    with pytest.raises(SendError) as refused:
        await plugin.send(outgoing(), "1111", prepared)
    assert str(refused.value) == "Bad Request: chat not found"
    telegram.blocked.add(CHAT)
    with pytest.raises(SendError, match="Forbidden: bot was blocked by the user"):
        await plugin.send(outgoing(), str(CHAT), prepared)
    with pytest.raises(SendError, match="not linked Telegram"):
        await plugin.send(outgoing(), None, prepared)
    assert telegram.sent == []


async def test_private_api_base_refused_unless_allowed(tmp_path: Path, telegram: TelegramServer) -> None:
    guarded = TelegramPlugin(context(tmp_path, allow_private=False))
    with pytest.raises(CredentialsError, match="private, loopback or link-local"):
        await guarded.validate_credentials(creds(telegram))
    with pytest.raises(SendError, match="private, loopback or link-local"):
        await guarded.send(outgoing(), str(CHAT), creds(telegram))
    assert telegram.requests == []


# -- updates -----------------------------------------------------------------------------------


async def test_text_message_is_inbound(plugin: TelegramPlugin, telegram: TelegramServer) -> None:
    prepared = await registered(plugin, telegram)
    parsed = await plugin.parse_webhook(telegram.update(CHAT, "Yes please", message_id=42).request(), prepared)
    [inbound] = parsed
    assert isinstance(inbound, Inbound)
    assert (inbound.address, inbound.content, inbound.provider_message_id) == (str(CHAT), "Yes please", f"{CHAT}:42")
    assert inbound.at is not None


async def test_start_with_a_token_is_a_link(plugin: TelegramPlugin, telegram: TelegramServer) -> None:
    prepared = await registered(plugin, telegram)
    [link] = await plugin.parse_webhook(telegram.update(CHAT, "/start tok_123-x", message_id=7).request(), prepared)
    assert link == Link(token="tok_123-x", address=str(CHAT), provider_message_id=f"{CHAT}:7", at=link.at)
    [bare] = await plugin.parse_webhook(telegram.update(CHAT, "/start").request(), prepared)
    assert isinstance(bare, Inbound) and bare.content == "/start"
    [odd] = await plugin.parse_webhook(telegram.update(CHAT, "/start not-a-token!").request(), prepared)
    assert isinstance(odd, Inbound)


async def test_secret_is_checked(plugin: TelegramPlugin, telegram: TelegramServer) -> None:
    prepared = await registered(plugin, telegram)
    good = telegram.update(CHAT, "hi")
    for forged in (
        good.with_headers(**{"X-Telegram-Bot-Api-Secret-Token": "guessed"}),
        good.with_headers(**{"X-Telegram-Bot-Api-Secret-Token": None}),
        good.with_headers(**{"X-Telegram-Bot-Api-Secret-Token": prepared.webhook_secret + "x"}),  # type: ignore[operator]
        good.with_headers(**{"X-Telegram-Bot-Api-Secret-Token": "é" * 43}),
    ):
        with pytest.raises(SignatureError, match="does not match"):
            await plugin.parse_webhook(forged.request(), prepared)
    with pytest.raises(SignatureError, match="No Telegram webhook is registered"):
        await plugin.parse_webhook(good.request(), creds(telegram))  # never prepared: no secret to compare with


async def test_other_updates_change_nothing(plugin: TelegramPlugin, telegram: TelegramServer) -> None:
    prepared = await registered(plugin, telegram)
    url, secret = prepared.webhook_url or "", prepared.webhook_secret
    photo = message_update(CHAT, "x")
    del photo["message"]["text"]
    edited = {"update_id": 5, "edited_message": message_update(CHAT, "typo")["message"]}
    for update in (photo, edited, {"update_id": 6}):
        assert await plugin.parse_webhook(update_callback(url, update, secret).request(), prepared) == []


async def test_hostile_bodies_are_payload_errors(plugin: TelegramPlugin, telegram: TelegramServer) -> None:
    prepared = await registered(plugin, telegram)
    url, secret = prepared.webhook_url or "", prepared.webhook_secret
    headers = update_callback(url, {}, secret).headers
    for body in (b"{not json", b"[1, 2]", b'"text"', b'{"message": {"chat": {"id": 1}, "text": "hi"}}'):
        with pytest.raises(PayloadError):
            await plugin.parse_webhook(Callback(url, body, headers).request(), prepared)
    with pytest.raises(PayloadTooLarge):
        await plugin.parse_webhook(Callback(url, b" " * 300_000, headers).request(), prepared)
