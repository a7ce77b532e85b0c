"""Two-way messaging end to end: the app, real SAQ workers, and local servers speaking Twilio's and
Telegram's documented APIs; callbacks signed as the providers sign them, POSTed to the hook URL."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from app.config import Settings
from app.contacts.links import link_token
from app.contacts.models import Contact
from app.messaging.models import Attempt
from app.tenants.models import Organization, Plan
from tests.conftest import World
from tests.helpers import start_worker, stop_process
from tests.pipeline import Tenant, fast_settings, send, setup_chain, tenant, wait_final
from tests.providers.telegram_api import BOT_TOKEN, TelegramServer
from tests.providers.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioServer, inbound_sms

PUBLIC = "http://testserver.local"  # what the test client calls: the URL the providers sign
PHONE = "+447911123456"
CHAT = 4242


@pytest.fixture
def settings(settings: Settings) -> Settings:
    s = fast_settings(settings)
    # provider calls get 10 s (fast_settings' 3 s is for local plugins; a loaded CI machine needs more)
    return dataclasses.replace(
        s,
        server=dataclasses.replace(s.server, public_url=PUBLIC),
        worker=dataclasses.replace(s.worker, send_timeout=10.0),
    )


@pytest.fixture
def worker(settings: Settings) -> Iterator[Any]:
    proc = start_worker(settings)
    yield proc
    stop_process(proc)


@pytest.fixture
def twilio() -> Iterator[TwilioServer]:
    with TwilioServer() as server:
        yield server


@pytest.fixture
def telegram() -> Iterator[TelegramServer]:
    with TelegramServer() as server:
        server.chats.add(CHAT)
        yield server


async def _credentials(client: AsyncTestClient[Any], t: Tenant, twilio: TwilioServer, telegram: TelegramServer) -> None:
    body = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": FROM_NUMBER,
        "api_base": twilio.base_url,
    }
    r = await client.put("/api/v1/services/twilio/credentials", json=body, headers=t.admin)
    assert r.status_code in (200, 204), r.text
    body = {"bot_token": BOT_TOKEN, "api_base": telegram.base_url}
    r = await client.put("/api/v1/services/telegram/credentials", json=body, headers=t.admin)
    assert r.status_code in (200, 204), r.text
    # Telegram was told where to send this organization's updates, with a secret
    assert telegram.webhook is not None and telegram.webhook.url == f"{PUBLIC}/hooks/telegram/{t.org_id}"
    assert telegram.webhook.secret_token


async def _contact(client: AsyncTestClient[Any], t: Tenant, **fields: Any) -> str:
    body = {"first_name": "Steve", "phone": PHONE, "telegram_chat_id": str(CHAT), **fields}
    r = await client.post("/api/v1/contacts", json=body, headers=t.user)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _message(client: AsyncTestClient[Any], t: Tenant, message_id: str) -> dict[str, Any]:
    r = await client.get(f"/api/v1/messages/{message_id}", headers=t.user)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _until(client: AsyncTestClient[Any], t: Tenant, message_id: str, state: str) -> dict[str, Any]:
    for _ in range(200):
        body = await _message(client, t, message_id)
        if body["state"] == state:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{message_id} never reached {state}: {body}")


@pytest.mark.usefixtures("worker")
async def test_twilio_send_receipts_forward_only_and_signatures(
    client: AsyncTestClient[Any], world: World, twilio: TwilioServer, telegram: TelegramServer
) -> None:
    t = await tenant(world)
    await _credentials(client, t, twilio, telegram)
    chain = await setup_chain(client, t, ["twilio", "telegram"])
    sent = await send(client, t, await _contact(client, t), chain, "Hi {{ first_name }}")
    final = await wait_final(client, t, sent["id"])
    assert final["state"] == "MSG_SENT" and final["service"] == "twilio", final
    [sms] = twilio.sent
    assert (sms.to, sms.from_, sms.body) == (PHONE, FROM_NUMBER, "Hi Steve")
    assert sms.status_callback == f"{PUBLIC}/hooks/twilio/{t.org_id}"
    assert final["provider_message_id"] == sms.sid and telegram.sent == []

    r = await twilio.status_callback(sms, "delivered").post(client)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml") and b"<Response" in r.content
    assert (await _message(client, t, sent["id"]))["state"] == "MSG_DELIVERED_USER"
    # a late "sent" (callbacks arrive out of order) leaves it there
    assert (await twilio.status_callback(sms, "sent").post(client)).status_code == 200
    assert (await _message(client, t, sent["id"]))["state"] == "MSG_DELIVERED_USER"
    # a wrongly signed or unsigned "read" is 403 and changes nothing
    forged = twilio.status_callback(sms, "read")
    assert (await forged.with_headers(**{"X-Twilio-Signature": "bm9wZQ=="}).post(client)).status_code == 403
    assert (await forged.with_headers(**{"X-Twilio-Signature": None}).post(client)).status_code == 403
    assert (await _message(client, t, sent["id"]))["state"] == "MSG_DELIVERED_USER"
    assert (await forged.post(client)).status_code == 200
    assert (await _message(client, t, sent["id"]))["state"] == "MSG_READ"


@pytest.mark.usefixtures("worker")
async def test_twilio_refusing_the_number_falls_back_to_telegram(
    client: AsyncTestClient[Any], world: World, twilio: TwilioServer, telegram: TelegramServer
) -> None:
    t = await tenant(world)
    await _credentials(client, t, twilio, telegram)
    twilio.invalid_numbers.add(PHONE)
    chain = await setup_chain(client, t, ["twilio", "telegram"])
    sent = await send(client, t, await _contact(client, t), chain, "Hello")
    final = await wait_final(client, t, sent["id"])
    # Telegram's acceptance is delivery to the intermediary
    assert final["state"] == "MSG_DELIVERED_SERVICE" and final["service"] == "telegram", final
    assert [(a["service"], a["outcome"]) for a in final["attempts"]] == [("twilio", "failed"), ("telegram", "sent")]
    assert "21211" in final["attempts"][0]["error"]
    assert [(s.chat_id, s.text) for s in telegram.sent] == [(CHAT, "Hello")]


@pytest.mark.usefixtures("worker")
async def test_undelivered_after_acceptance_moves_on_and_charges_once(
    client: AsyncTestClient[Any], world: World, twilio: TwilioServer, telegram: TelegramServer, sessions: Any
) -> None:
    t = await tenant(world, plan=Plan.PAY_IN_ADVANCE, credits=5)
    await _credentials(client, t, twilio, telegram)
    chain = await setup_chain(client, t, ["twilio", "telegram"])
    sent = await send(client, t, await _contact(client, t), chain, "Hello")
    assert (await wait_final(client, t, sent["id"]))["service"] == "twilio"
    [sms] = twilio.sent
    r = await twilio.status_callback(sms, "undelivered", error_code="30003").post(client)
    assert r.status_code == 200
    final = await _until(client, t, sent["id"], "MSG_DELIVERED_SERVICE")
    assert final["service"] == "telegram"
    attempts = [(a["service"], a["outcome"]) for a in final["attempts"]]
    assert attempts == [("twilio", "undelivered"), ("telegram", "sent")]
    assert "30003" in final["attempts"][0]["error"]
    assert len(telegram.sent) == 1
    async with sessions() as session:
        org = await session.get(Organization, UUID(t.org_id))
        assert org is not None and (org.credits, org.credits_reserved) == (4, 0)


@pytest.mark.usefixtures("worker")
async def test_inbound_reply_unknown_sender_and_stop_start_across_services(
    client: AsyncTestClient[Any], world: World, twilio: TwilioServer, telegram: TelegramServer, sessions: Any
) -> None:
    t = await tenant(world)
    await _credentials(client, t, twilio, telegram)
    contact_id = await _contact(client, t)
    sent = await send(client, t, contact_id, await setup_chain(client, t, ["twilio"]), "Are you coming?")
    assert (await wait_final(client, t, sent["id"]))["state"] == "MSG_SENT"
    hook = f"{PUBLIC}/hooks/twilio/{t.org_id}"

    reply = inbound_sms(hook, PHONE, "Yes!")
    assert (await reply.post(client)).status_code == 200
    assert (await reply.post(client)).status_code == 200  # Twilio retried: stored once
    r = await client.get(f"/api/v1/contacts/{contact_id}/messages", headers=t.user)
    thread = [(m["direction"], m["state"], m["content"], m["reply_to"]) for m in r.json()["items"]]
    assert thread == [
        ("outgoing", "MSG_REPLIED", "Are you coming?", None),
        ("incoming", "MSG_RECEIVED", "Yes!", sent["id"]),
    ]

    # an unknown number becomes an unknown contact
    assert (await inbound_sms(hook, "+447400123456", "who?").post(client)).status_code == 200
    async with sessions() as session:
        unknown = await session.scalar(
            select(Contact).where(Contact.organization_id == UUID(t.org_id), Contact.phone == "+447400123456")
        )
        assert unknown is not None and unknown.is_unknown

    # STOP by SMS opts out of the whole organization: a send through Telegram fails without an attempt
    assert (await inbound_sms(hook, PHONE, "STOP").post(client)).status_code == 200
    c = (await client.get(f"/api/v1/contacts/{contact_id}", headers=t.user)).json()
    assert c["opted_out"] is True and c["opted_out_via"] == "twilio"
    blocked = await send(client, t, contact_id, await setup_chain(client, t, ["telegram"], "tg"), "Sale!")
    final = await wait_final(client, t, blocked["id"])
    assert final["state"] == "MSG_FAILED" and final["failure_reason"] == "opted_out" and final["attempts"] == []
    assert telegram.sent == []
    # START through Telegram opts back in
    assert (await telegram.update(CHAT, "START").post(client)).status_code == 200
    c = (await client.get(f"/api/v1/contacts/{contact_id}", headers=t.user)).json()
    assert c["opted_out"] is False


async def test_telegram_start_link_and_cross_tenant_hooks(
    client: AsyncTestClient[Any],
    world: World,
    twilio: TwilioServer,
    telegram: TelegramServer,
    settings: Settings,
    sessions: Any,
) -> None:
    t, other = await tenant(world), await tenant(world)
    await _credentials(client, t, twilio, telegram)
    contact_id = await _contact(client, t, telegram_chat_id=None, phone=PHONE)
    token = link_token(settings.security.secret_key, UUID(t.org_id), UUID(contact_id))
    update = telegram.update(777000, f"/start {token}")
    # a wrong secret is 403 and links nothing
    assert (await update.with_headers(**{"X-Telegram-Bot-Api-Secret-Token": "wrong"}).post(client)).status_code == 403
    # another organization's hook URL with this organization's signature: that organization has no
    # credentials for the service, so 404, and nothing changes
    assert (await update.post(client, f"/hooks/telegram/{other.org_id}")).status_code == 404
    sms = inbound_sms(f"{PUBLIC}/hooks/twilio/{t.org_id}", PHONE, "STOP")
    assert (await sms.post(client, f"/hooks/twilio/{other.org_id}")).status_code == 404
    c = (await client.get(f"/api/v1/contacts/{contact_id}", headers=t.user)).json()
    assert c["telegram_chat_id"] is None and c["opted_out"] is False
    # the real one links the chat to the contact the token was issued for
    assert (await update.post(client)).status_code == 200
    c = (await client.get(f"/api/v1/contacts/{contact_id}", headers=t.user)).json()
    assert c["telegram_chat_id"] == "777000"


@pytest.mark.usefixtures("worker")
async def test_a_receipt_before_the_send_event_is_applied_when_the_id_is_known(
    client: AsyncTestClient[Any], world: World, twilio: TwilioServer, telegram: TelegramServer, sessions: Any
) -> None:
    """Twilio may call back before the send job's event recorded the message's sid: the receipt is kept
    and applied again a little later, not lost."""
    t = await tenant(world)
    await _credentials(client, t, twilio, telegram)
    sent = await send(client, t, await _contact(client, t), await setup_chain(client, t, ["twilio"]), "Hi")
    assert (await wait_final(client, t, sent["id"]))["state"] == "MSG_SENT"
    [sms] = twilio.sent
    # as if the "delivered" callback had come before the event: the attempt does not know the sid yet
    async with sessions() as session:
        await session.execute(
            update(Attempt).where(Attempt.message_id == UUID(sent["id"])).values(provider_message_id=None)
        )
        await session.commit()
    assert (await twilio.status_callback(sms, "delivered").post(client)).status_code == 200
    assert (await _message(client, t, sent["id"]))["state"] == "MSG_SENT"
    async with sessions() as session:  # the send's event arrives
        await session.execute(
            update(Attempt).where(Attempt.message_id == UUID(sent["id"])).values(provider_message_id=sms.sid)
        )
        await session.commit()
    await _until(client, t, sent["id"], "MSG_DELIVERED_USER")
