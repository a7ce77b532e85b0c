"""The ``twilio`` plugin against a local server that answers as Twilio's REST API does.

No plugin code is patched: the plugin's ``api_base`` points at :class:`TwilioServer` on 127.0.0.1
(``allow_private_targets`` on), and callbacks are signed by the ``twilio`` package as Twilio signs them.
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
    OutgoingMessage,
    PayloadError,
    PayloadTooLarge,
    PluginContext,
    Receipt,
    SendError,
    SignatureError,
)
from app.plugins.twilio import TWIML_EMPTY, TwilioCredentials, TwilioPlugin, hook_url
from tests.helpers import free_port
from tests.providers.server import Callback
from tests.providers.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioServer, inbound_sms, signed

PUBLIC_URL = "https://voluble.example.com"
ORG = uuid.UUID("00000000-0000-4000-8000-000000000001")


def context(tmp_path: Path, *, allow_private: bool = True) -> PluginContext:
    return PluginContext(var_dir=tmp_path, allow_private_targets=allow_private, public_url=PUBLIC_URL, send_timeout=5.0)


def creds(server: TwilioServer, **overrides: Any) -> TwilioCredentials:
    raw = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": FROM_NUMBER,
        "api_base": server.base_url,
    }
    return msgspec.convert({**raw, **overrides}, TwilioCredentials)


def outgoing(content: str = "Your table is ready") -> OutgoingMessage:
    contact = ContactInfo(id=uuid.uuid4(), first_name="Steve", phone="+15551234567")
    return OutgoingMessage(id=uuid.uuid4(), organization_id=ORG, content=content, contact=contact)


@pytest.fixture
def twilio() -> Iterator[TwilioServer]:
    with TwilioServer() as server:
        yield server


@pytest.fixture
def plugin(tmp_path: Path) -> TwilioPlugin:
    return TwilioPlugin(context(tmp_path))


async def test_self_test_passes(plugin: TwilioPlugin) -> None:
    await plugin.self_test()
    assert plugin.info.address_field == "phone" and plugin.info.accepted_state == "MSG_SENT"


async def test_credentials_accepted_and_refused(plugin: TwilioPlugin, twilio: TwilioServer) -> None:
    await plugin.validate_credentials(creds(twilio))
    [fetch] = twilio.requests
    assert (fetch.method, fetch.path) == ("GET", f"/2010-04-01/Accounts/{ACCOUNT_SID}.json")
    assert fetch.headers["authorization"].startswith("Basic ")

    with pytest.raises(CredentialsError, match=r"refused the Account SID and Auth Token \(401"):
        await plugin.validate_credentials(creds(twilio, auth_token="a-wrong-auth-token"))
    with pytest.raises(CredentialsError, match="401"):
        await plugin.validate_credentials(creds(twilio, account_sid="AC" + "f" * 32))
    with pytest.raises(CredentialsError, match="http:// or https://"):
        await plugin.validate_credentials(creds(twilio, api_base="ftp://api.twilio.example"))
    assert "auth_token=***" in repr(creds(twilio)) and AUTH_TOKEN not in repr(creds(twilio))


async def test_malformed_credentials_refused_by_their_type(twilio: TwilioServer) -> None:
    for field, value in [("account_sid", "AC/../x"), ("from_number", "5551234"), ("auth_token", "short")]:
        with pytest.raises(msgspec.ValidationError, match=field):
            creds(twilio, **{field: value})


async def test_unreachable_api_is_a_credentials_error(plugin: TwilioPlugin) -> None:
    server = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CredentialsError, match="Cannot reach Twilio"):
        await plugin.validate_credentials(
            msgspec.convert(
                {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": FROM_NUMBER, "api_base": server},
                TwilioCredentials,
            )
        )


async def test_send_posts_to_from_body_and_status_callback(plugin: TwilioPlugin, twilio: TwilioServer) -> None:
    message = outgoing("Your table is ready")

    provider_id = await plugin.send(message, "+15551234567", creds(twilio))

    [sms] = twilio.sent
    assert provider_id == sms.sid and provider_id.startswith("SM")
    [request] = twilio.requests
    assert (request.method, request.path) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.form == {
        "To": "+15551234567",
        "From": FROM_NUMBER,
        "Body": "Your table is ready",
        "StatusCallback": f"{PUBLIC_URL}/hooks/twilio/{ORG}",
    }
    assert hook_url(PUBLIC_URL + "/", ORG) == f"{PUBLIC_URL}/hooks/twilio/{ORG}"


async def test_send_through_a_messaging_service(plugin: TwilioPlugin, twilio: TwilioServer) -> None:
    service_sid = "MG" + "a" * 32
    await plugin.send(outgoing(), "+15551234567", creds(twilio, from_number=service_sid))
    [request] = twilio.requests
    assert request.form["MessagingServiceSid"] == service_sid and "From" not in request.form


async def test_refused_number_is_a_send_error_with_code_and_message(plugin: TwilioPlugin, twilio: TwilioServer) -> None:
    twilio.invalid_numbers.add("+15550000000")
    with pytest.raises(SendError) as refused:
        await plugin.send(outgoing(), "+15550000000", creds(twilio))
    assert str(refused.value) == "Twilio error 21211: The 'To' number +15550000000 is not a valid phone number."
    twilio.unsubscribed.add("+15551234567")
    with pytest.raises(SendError, match="Twilio error 21610: Attempt to send to unsubscribed recipient"):
        await plugin.send(outgoing(), "+15551234567", creds(twilio))
    with pytest.raises(SendError, match="Twilio error 20003: Authenticate"):
        await plugin.send(outgoing(), "+15557654321", creds(twilio, auth_token="a-wrong-auth-token"))
    with pytest.raises(SendError, match="no phone number"):
        await plugin.send(outgoing(), None, creds(twilio))
    assert twilio.sent == []


async def test_private_api_base_refused_unless_allowed(tmp_path: Path, twilio: TwilioServer) -> None:
    guarded = TwilioPlugin(context(tmp_path, allow_private=False))
    with pytest.raises(CredentialsError, match="private, loopback or link-local"):
        await guarded.validate_credentials(creds(twilio))
    with pytest.raises(SendError, match="private, loopback or link-local"):
        await guarded.send(outgoing(), "+15551234567", creds(twilio))
    assert twilio.requests == []


# -- callbacks ---------------------------------------------------------------------------------


async def _sent(plugin: TwilioPlugin, twilio: TwilioServer) -> Any:
    await plugin.send(outgoing(), "+15551234567", creds(twilio))
    return twilio.sent[-1]


@pytest.mark.parametrize(
    ("status", "state"), [("sent", "MSG_SENT"), ("delivered", "MSG_DELIVERED_USER"), ("read", "MSG_READ")]
)
async def test_status_callback_is_a_receipt(
    plugin: TwilioPlugin, twilio: TwilioServer, status: str, state: str
) -> None:
    sms = await _sent(plugin, twilio)
    parsed = await plugin.parse_webhook(twilio.status_callback(sms, status).request(), creds(twilio))
    assert parsed == [Receipt(provider_message_id=sms.sid, state=state)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "code"), [("undelivered", "30003"), ("failed", "30005")])
async def test_undelivered_and_failed_are_failed_receipts_with_the_error_code(
    plugin: TwilioPlugin, twilio: TwilioServer, status: str, code: str
) -> None:
    sms = await _sent(plugin, twilio)
    [receipt] = await plugin.parse_webhook(twilio.status_callback(sms, status, code).request(), creds(twilio))
    assert isinstance(receipt, Receipt)
    assert (receipt.provider_message_id, receipt.state, receipt.error_code) == (sms.sid, "MSG_FAILED", code)
    assert receipt.error == f"Twilio status {status}, error {code}"


@pytest.mark.parametrize("status", ["queued", "sending", "accepted", "some_future_status"])
async def test_statuses_before_acceptance_change_nothing(
    plugin: TwilioPlugin, twilio: TwilioServer, status: str
) -> None:
    sms = await _sent(plugin, twilio)
    assert await plugin.parse_webhook(twilio.status_callback(sms, status).request(), creds(twilio)) == []


async def test_inbound_sms_is_inbound(plugin: TwilioPlugin, twilio: TwilioServer) -> None:
    callback = inbound_sms(hook_url(PUBLIC_URL, ORG), "+15551234567", "Yes please", sid="SM" + "b" * 32)
    parsed = await plugin.parse_webhook(callback.request(), creds(twilio))
    assert parsed == [Inbound(address="+15551234567", content="Yes please", provider_message_id="SM" + "b" * 32)]
    assert TWIML_EMPTY.startswith(b'<?xml version="1.0" encoding="UTF-8"?>') and TWIML_EMPTY.endswith(b"<Response/>")
    assert (plugin.info.webhook_answer, plugin.info.webhook_answer_type) == (TWIML_EMPTY, "text/xml")


async def test_signature_is_over_the_url_as_called_with_its_query(plugin: TwilioPlugin, twilio: TwilioServer) -> None:
    url = hook_url(PUBLIC_URL, ORG) + "?attempt=2"
    callback = inbound_sms(url, "+15551234567", "Hi")
    assert callback.request().query == {"attempt": "2"}
    assert len(await plugin.parse_webhook(callback.request(), creds(twilio))) == 1
    moved = Callback(
        hook_url(PUBLIC_URL, ORG), callback.body, callback.headers
    )  # the same form, signed for another URL
    with pytest.raises(SignatureError, match="does not verify"):
        await plugin.parse_webhook(moved.request(), creds(twilio))


async def test_bad_or_missing_signature_is_a_signature_error(plugin: TwilioPlugin, twilio: TwilioServer) -> None:
    url = hook_url(PUBLIC_URL, ORG)
    good = inbound_sms(url, "+15551234567", "STOP")
    forged = signed(
        url, {"MessageSid": "SM1", "From": "+15551234567", "Body": "STOP", "AccountSid": ACCOUNT_SID}, "x" * 32
    )
    tampered = Callback(url, good.body.replace(b"STOP", b"START"), good.headers)
    for callback in (forged, tampered, good.with_headers(**{"X-Twilio-Signature": "AAAA"})):
        with pytest.raises(SignatureError, match="does not verify"):
            await plugin.parse_webhook(callback.request(), creds(twilio))
    with pytest.raises(SignatureError, match="no X-Twilio-Signature"):
        await plugin.parse_webhook(good.with_headers(**{"X-Twilio-Signature": None}).request(), creds(twilio))
    with pytest.raises(SignatureError, match="no Twilio credentials"):
        await plugin.parse_webhook(good.request(), None)


async def test_another_accounts_callback_is_refused(plugin: TwilioPlugin, twilio: TwilioServer) -> None:
    other = "AC" + "9" * 32
    callback = inbound_sms(hook_url(PUBLIC_URL, ORG), "+15551234567", "Hi", account_sid=other)
    with pytest.raises(SignatureError, match="another Twilio account"):
        await plugin.parse_webhook(callback.request(), creds(twilio))


async def test_hostile_bodies_are_payload_errors(plugin: TwilioPlugin, twilio: TwilioServer) -> None:
    url = hook_url(PUBLIC_URL, ORG)
    big = signed(url, {"MessageSid": "SM1", "From": "+1555", "Body": "x" * 70_000}, AUTH_TOKEN)
    with pytest.raises(PayloadTooLarge):
        await plugin.parse_webhook(big.request(), creds(twilio))
    many = signed(url, {f"F{i}": "v" for i in range(500)}, AUTH_TOKEN)
    bad_utf8 = Callback(url, b"Body=\xff\xfe&MessageSid=SM1", {**many.headers})
    as_json = many.with_headers(**{"Content-Type": "application/json"})
    no_sid = signed(url, {"From": "+15551234567", "Body": "hi"}, AUTH_TOKEN)
    no_from = signed(url, {"MessageSid": "SM1", "Body": "hi"}, AUTH_TOKEN)
    for callback in (many, bad_utf8, as_json, no_sid, no_from):
        with pytest.raises(PayloadError):
            await plugin.parse_webhook(callback.request(), creds(twilio))
