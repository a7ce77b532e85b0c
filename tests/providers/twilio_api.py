"""A Twilio-compatible REST API (2010-04-01) on 127.0.0.1, and Twilio's signed callbacks.

Answers as Twilio's Programmable Messaging API does: the account fetch, ``Messages.json`` (201 with
a ``sid``; a 400 with code 21211 for a number in :attr:`TwilioServer.invalid_numbers`), 401 code
20003 for a wrong Auth Token. :meth:`TwilioServer.status_callback` and :func:`inbound_sms` build the
form POSTs Twilio makes, signed with ``X-Twilio-Signature`` by the ``twilio`` package.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from tests.providers.server import Callback, Recorded, RecordingServer, Reply

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
FROM_NUMBER = "+15005550006"
API = "/2010-04-01"


@dataclass(frozen=True)
class Sms:
    """A message the server accepted."""

    sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status_callback: str | None


def _error(status: int, code: int, message: str) -> Reply:
    return Reply.json(
        status,
        {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
    )


def signed(url: str, params: Mapping[str, str], auth_token: str) -> Callback:
    """A form POST to ``url`` as Twilio makes it: form-encoded, with ``X-Twilio-Signature``."""
    signature = RequestValidator(auth_token).compute_signature(url, dict(params))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "TwilioProxy/1.1",
        "X-Twilio-Signature": signature,
    }
    return Callback(url, urlencode(params).encode(), headers)


def inbound_sms(
    url: str,
    from_: str,
    body: str,
    *,
    to: str = FROM_NUMBER,
    sid: str | None = None,
    account_sid: str = ACCOUNT_SID,
    auth_token: str = AUTH_TOKEN,
) -> Callback:
    """The webhook Twilio calls on a number's "A message comes in"."""
    sid = sid or "SM" + secrets.token_hex(16)
    params = {
        "ToCountry": "US",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": body,
        "To": to,
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": "2010-04-01",
    }
    return signed(url, params, auth_token)


def status_params(sms: Sms, status: str, account_sid: str, error_code: str | None = None) -> dict[str, str]:
    params = {
        "SmsSid": sms.sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": sms.to,
        "MessageSid": sms.sid,
        "AccountSid": account_sid,
        "From": sms.from_ or "",
        "ApiVersion": "2010-04-01",
    }
    if error_code is not None:
        params["ErrorCode"] = error_code
    return params


class TwilioServer(RecordingServer):
    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        #: numbers the Messages resource refuses with code 21211
        self.invalid_numbers: set[str] = set()
        #: numbers that replied STOP: refused with code 21610
        self.unsubscribed: set[str] = set()
        self.sent: list[Sms] = []

    def _authorized(self, request: Recorded) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and secrets.compare_digest(password, self.auth_token)

    def answer(self, request: Recorded) -> Reply:
        account = f"{API}/Accounts/{self.account_sid}"
        if not request.path.startswith(f"{API}/Accounts/"):
            return _error(404, 20404, "The requested resource was not found")
        if not self._authorized(request):
            return _error(401, 20003, "Authenticate")
        if request.method == "GET" and request.path == f"{account}.json":
            return Reply.json(
                200,
                {"sid": self.account_sid, "friendly_name": "Test account", "status": "active", "type": "Full"},
            )
        if request.method == "POST" and request.path == f"{account}/Messages.json":
            return self._create_message(request.form)
        return _error(404, 20404, "The requested resource was not found")

    def _create_message(self, form: dict[str, str]) -> Reply:
        to, from_, service, body = form.get("To"), form.get("From"), form.get("MessagingServiceSid"), form.get("Body")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not from_ and not service:
            return _error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if to in self.invalid_numbers or not to.startswith("+"):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in self.unsubscribed:
            return _error(400, 21610, "Attempt to send to unsubscribed recipient")
        sms = Sms("SM" + secrets.token_hex(16), to, from_, service, body, form.get("StatusCallback"))
        self.sent.append(sms)
        return Reply.json(
            201,
            {
                "sid": sms.sid,
                "account_sid": self.account_sid,
                "status": "queued",
                "to": to,
                "from": from_,
                "messaging_service_sid": service,
                "body": body,
                "num_segments": "1",
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "uri": f"{API}/Accounts/{self.account_sid}/Messages/{sms.sid}.json",
            },
        )

    def status_callback(self, sms: Sms, status: str, error_code: str | None = None) -> Callback:
        """The signed status callback Twilio POSTs to the message's ``StatusCallback``."""
        assert sms.status_callback, "the message was sent without a StatusCallback"
        return signed(sms.status_callback, status_params(sms, status, self.account_sid, error_code), self.auth_token)
