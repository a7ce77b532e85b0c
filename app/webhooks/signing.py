"""Standard Webhooks signing (the ``standardwebhooks`` package): secrets, headers and the body."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec
from standardwebhooks.webhooks import Webhook

PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh ``whsec_<base64 of 32 random bytes>``."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def body(type_: str, timestamp: datetime, data: Any) -> bytes:
    """``{"type", "timestamp", "data"}`` as JSON bytes (exactly what is signed and sent)."""
    return msgspec.json.encode({"type": type_, "timestamp": timestamp, "data": data})


def headers(keys: Iterable[str], message_id: str, timestamp: datetime, content: bytes) -> dict[str, str]:
    """The ``webhook-*`` headers: one ``v1,…`` signature per secret in ``keys``, space-separated."""
    text = content.decode()
    signatures = " ".join(Webhook(key).sign(message_id, timestamp, text) for key in keys)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }
