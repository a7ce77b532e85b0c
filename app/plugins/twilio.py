"""The ``twilio`` service: SMS over Twilio's Programmable Messaging REST API (2010-04-01).

- Credentials check: ``GET {api_base}/2010-04-01/Accounts/{sid}.json`` with HTTP Basic sid:token.
- Send: ``POST {api_base}/2010-04-01/Accounts/{sid}/Messages.json`` (form ``To``, ``From`` — or
  ``MessagingServiceSid`` when ``from_number`` is an ``MG…`` sid —, ``Body``,
  ``StatusCallback={public_url}/hooks/twilio/{organization_id}``); the provider id is the answer's
  ``sid``; a 4xx/5xx answer fails the attempt with Twilio's ``code`` and ``message``.
- Callbacks on ``/hooks/twilio/{organization_id}``, signed with ``X-Twilio-Signature`` (verified by
  the official ``twilio`` package over the URL as called and the form parameters): status callbacks
  (``MessageStatus`` ``sent``/``delivered``/``read`` → receipts, ``undelivered``/``failed`` → a
  ``MSG_FAILED`` receipt with ``ErrorCode``) and inbound SMS (``From``, ``Body``) → :class:`Inbound`.
  The same URL serves as the number's "A message comes in" webhook. Twilio expects TwiML back:
  :data:`TWIML_EMPTY` as ``text/xml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, ClassVar
from urllib.parse import parse_qsl, quote
from uuid import UUID

import msgspec
from twilio.request_validator import RequestValidator

from app.plugins.base import (
    CredentialsError,
    Inbound,
    OutgoingMessage,
    Parsed,
    PayloadError,
    PayloadTooLarge,
    PluginContext,
    PluginError,
    PluginInfo,
    Receipt,
    SelfTestError,
    SendError,
    SignatureError,
    WebhookRequest,
)
from app.plugins.httpapi import call as call_api
from app.plugins.httpapi import check_api_base, clip
from app.plugins.transport import guarded_transport

NAME = "twilio"
API_BASE = "https://api.twilio.com"
SIGNATURE_HEADER = "X-Twilio-Signature"
#: what Twilio expects as the answer to a callback (``Content-Type: text/xml``)
TWIML_EMPTY = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
#: the largest callback body read (a status callback or an SMS is a few hundred bytes)
MAX_BODY = 64 * 1024
MAX_FIELDS = 200
#: characters of an inbound SMS kept (Twilio joins a long SMS up to 1600)
MAX_INBOUND = 10_000

#: Twilio ``MessageStatus`` → the state it confirms
RECEIPT_STATES: dict[str, Any] = {
    "sent": "MSG_SENT",
    "delivered": "MSG_DELIVERED_USER",
    "read": "MSG_READ",
    "undelivered": "MSG_FAILED",
    "failed": "MSG_FAILED",
}
#: statuses before acceptance or without meaning for a message's state: acknowledged, ignored
IGNORED_STATUSES = frozenset(
    {"accepted", "scheduled", "queued", "sending", "canceled", "partially_delivered", "receiving"}
)


class TwilioCredentials(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    account_sid: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^[A-Za-z0-9-]{8,64}$",
            description="Account SID (AC…), or the account id of a Twilio-compatible provider.",
        ),
    ]
    auth_token: Annotated[
        str,
        msgspec.Meta(
            min_length=8,
            max_length=256,
            pattern=r"^[\x21-\x7e]+$",
            description="Auth Token; it also signs Twilio's callbacks.",
            extra_json_schema={"writeOnly": True, "format": "password"},
        ),
    ]
    from_number: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^(\+[1-9][0-9]{6,14}|MG[0-9a-fA-F]{32})$",
            description="The sending number in E.164 (+15551234567), or a Messaging Service SID (MG…).",
        ),
    ]
    api_base: Annotated[
        str,
        msgspec.Meta(
            min_length=10, max_length=300, description="Base URL of the REST API (a Twilio-compatible provider's)."
        ),
    ] = API_BASE

    def __repr__(self) -> str:
        return f"TwilioCredentials(account_sid={self.account_sid!r}, auth_token=***, from_number={self.from_number!r})"


def hook_url(public_url: str, organization_id: UUID | str) -> str:
    """The URL Twilio calls back for an organization: status callbacks and the number's inbound webhook."""
    return f"{public_url.rstrip('/')}/hooks/{NAME}/{organization_id}"


def _error_reason(answer_data: Any, status: int) -> str:
    if isinstance(answer_data, dict) and (answer_data.get("code") is not None or answer_data.get("message")):
        code = answer_data.get("code")
        message = clip(answer_data.get("message") or "no message")
        return f"Twilio error {clip(code, 20)}: {message}" if code is not None else f"Twilio: {message}"
    return f"Twilio answered HTTP {status}."


class _Form(dict[str, list[str]]):
    """Form parameters with repeated names kept; ``getlist`` is what RequestValidator reads."""

    def getlist(self, name: str) -> list[str]:
        return self[name]

    def one(self, name: str) -> str | None:
        values = self.get(name)
        return values[-1] if values else None


def parse_form(request: WebhookRequest) -> _Form:
    """The form parameters of a callback; :class:`PayloadError` when it is not a readable form."""
    if len(request.body) > MAX_BODY:
        raise PayloadTooLarge(f"The callback is larger than {MAX_BODY // 1024} KiB.")
    content_type = {k.lower(): v for k, v in request.headers.items()}.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
        raise PayloadError("Twilio callbacks are application/x-www-form-urlencoded.")
    try:
        text = request.body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("The callback's form is malformed.") from exc
    form = _Form()
    for name, value in pairs:
        form.setdefault(name, []).append(value)
    return form


class TwilioPlugin:
    info: ClassVar[PluginInfo] = PluginInfo(
        name=NAME,
        title="Twilio SMS",
        address_field="phone",
        credentials_type=TwilioCredentials,
        max_length=1600,
        webhook_answer=TWIML_EMPTY,
        webhook_answer_type="text/xml",
        receipts=True,
        description="SMS through Twilio's REST API, with delivery receipts and replies.",
    )

    def __init__(self, context: PluginContext) -> None:
        self.context = context

    async def self_test(self) -> None:
        validator = RequestValidator("self-test-token")
        url, params = "https://example.com/hooks/twilio/x", {"MessageSid": "SM1", "MessageStatus": "sent"}
        if not validator.validate(url, params, validator.compute_signature(url, params)):
            raise SelfTestError("The twilio package's request validator does not work on this installation.")
        try:
            transport = guarded_transport(self.context.allow_private_targets)
        except Exception as exc:
            raise SelfTestError(f"Cannot build the guarded HTTP transport: {exc}") from exc
        await transport.aclose()

    def _account_url(self, credentials: TwilioCredentials, suffix: str = ".json") -> str:
        base = check_api_base(credentials.api_base)
        return f"{base}/2010-04-01/Accounts/{quote(credentials.account_sid, safe='')}{suffix}"

    async def validate_credentials(self, credentials: Any) -> None:
        if not isinstance(credentials, TwilioCredentials):
            raise CredentialsError("Twilio credentials expected.")
        try:
            answer = await call_api(
                self.context,
                "GET",
                self._account_url(credentials),
                provider="Twilio",
                auth=(credentials.account_sid, credentials.auth_token),
            )
        except CredentialsError:
            raise
        except PluginError as exc:
            raise CredentialsError(str(exc)) from exc
        if answer.status == 401:
            raise CredentialsError("Twilio refused the Account SID and Auth Token (401 Unauthorized).")
        if answer.status == 404:
            raise CredentialsError(f"Twilio knows no account {credentials.account_sid!r} (404).")
        if not 200 <= answer.status < 300:
            raise CredentialsError(f"The account check failed: {_error_reason(answer.data, answer.status)}")
        if isinstance(answer.data, dict) and answer.data.get("status") not in (None, "active"):
            raise CredentialsError(f"The Twilio account is {clip(answer.data.get('status'), 40)}, not active.")

    async def send(self, message: OutgoingMessage, address: str | None, credentials: Any) -> str:
        if not isinstance(credentials, TwilioCredentials):
            raise SendError("The organization has no Twilio credentials.")
        if not address:
            raise SendError("The contact has no phone number.")
        form = {
            "To": address,
            "Body": message.content,
            "StatusCallback": hook_url(self.context.public_url, message.organization_id),
        }
        sender = "MessagingServiceSid" if credentials.from_number.startswith("MG") else "From"
        form[sender] = credentials.from_number
        try:
            answer = await call_api(
                self.context,
                "POST",
                self._account_url(credentials, "/Messages.json"),
                provider="Twilio",
                auth=(credentials.account_sid, credentials.auth_token),
                data=form,
            )
        except PluginError as exc:
            raise SendError(str(exc)) from exc
        if not 200 <= answer.status < 300:
            raise SendError(_error_reason(answer.data, answer.status))
        sid = answer.data.get("sid") if isinstance(answer.data, dict) else None
        if not isinstance(sid, str) or not sid.strip() or len(sid) > 64:
            raise SendError(f"Twilio answered HTTP {answer.status} without a message sid.")
        return sid.strip()

    async def parse_webhook(self, request: WebhookRequest, credentials: Any) -> Sequence[Parsed]:
        if not isinstance(credentials, TwilioCredentials):
            raise SignatureError("The organization has no Twilio credentials.")
        signature = {k.lower(): v for k, v in request.headers.items()}.get(SIGNATURE_HEADER.lower())
        if not signature:
            raise SignatureError(f"The callback has no {SIGNATURE_HEADER} header.")
        form = parse_form(request)
        if not RequestValidator(credentials.auth_token).validate(request.url, form, signature):
            raise SignatureError(f"The {SIGNATURE_HEADER} signature does not verify.")
        account = form.one("AccountSid")
        if account is not None and account != credentials.account_sid:
            raise SignatureError("The callback belongs to another Twilio account.")
        return _interpret(form)


def _interpret(form: _Form) -> list[Parsed]:
    sid = form.one("MessageSid") or form.one("SmsSid")
    if not sid:
        raise PayloadError("The callback has no MessageSid.")
    sid = clip(sid, 64)
    status = (form.one("MessageStatus") or form.one("SmsStatus") or "").strip().lower()
    if status in ("", "received"):
        sender = form.one("From")
        if not sender:
            raise PayloadError("The inbound message has no From.")
        return [
            Inbound(address=clip(sender, 64), content=(form.one("Body") or "")[:MAX_INBOUND], provider_message_id=sid)
        ]
    state = RECEIPT_STATES.get(status)
    if state is None:
        return []  # queued, sending…: nothing changes (IGNORED_STATUSES), and unknown statuses too
    if state != "MSG_FAILED":
        return [Receipt(provider_message_id=sid, state=state)]
    code = form.one("ErrorCode")
    code = clip(code, 20) if code else None
    detail = form.one("ErrorMessage")
    reason = f"Twilio status {status}" + (f", error {code}" if code else "") + (f": {clip(detail)}" if detail else "")
    return [Receipt(provider_message_id=sid, state=state, error=reason, error_code=code)]
