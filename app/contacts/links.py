"""Telegram deep-link tokens: ``https://t.me/<bot>?start=<token>`` ties a chat to one contact.

A token names the contact and carries an HMAC of (organization, contact) under the instance's secret
key, so nothing is stored, a token cannot be forged or moved to another organization, and it fits
Telegram's ``start`` payload (at most 64 characters of ``A-Z a-z 0-9 _ -``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from uuid import UUID

_MAC_BYTES = 12


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _mac(secret_key: str, organization_id: UUID, contact_id: UUID) -> bytes:
    msg = b"telegram-link:" + organization_id.bytes + contact_id.bytes
    return hmac.new(secret_key.encode(), msg, hashlib.sha256).digest()[:_MAC_BYTES]


def link_token(secret_key: str, organization_id: UUID, contact_id: UUID) -> str:
    return _b64(contact_id.bytes) + _b64(_mac(secret_key, organization_id, contact_id))


def contact_of(secret_key: str, organization_id: UUID, token: str) -> UUID | None:
    """The contact a token was issued for in this organization, or None for anything else."""
    if len(token) != 38 or not token.isascii():
        return None
    try:
        contact_id = UUID(bytes=base64.urlsafe_b64decode(token[:22] + "=="))
        mac = base64.urlsafe_b64decode(token[22:] + "==")
    except ValueError:
        return None
    if not hmac.compare_digest(mac, _mac(secret_key, organization_id, contact_id)):
        return None
    return contact_id


def telegram_link(bot_username: str, token: str) -> str:
    return f"https://t.me/{bot_username}?start={token}"
