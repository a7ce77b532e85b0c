"""Encryption of service credentials at rest (Fernet: AES-128-CBC + HMAC-SHA256).

The key is ``VOLUBLE_CREDENTIALS_KEY`` when set (a Fernet key, or any passphrase, which is stretched
with HKDF), else derived from ``VOLUBLE_SECRET_KEY`` with HKDF. When a credentials key is set, tokens
written earlier under the secret-derived key still decrypt, so the key can be introduced later.

Each token binds the organization and the service it belongs to: a ciphertext copied into another
organization's row (or another service's) does not decrypt to usable credentials.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from uuid import UUID

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.config import SecuritySettings
from app.plugins.base import PluginError


class CredentialsUnavailable(PluginError):
    """Stored credentials cannot be used (wrong key, tampered, or no longer valid for the plugin)."""


def _derive(secret: str) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"voluble", info=b"service-credentials/v1").derive(
        secret.encode()
    )
    return base64.urlsafe_b64encode(key)


def _as_fernet_key(value: str) -> bytes:
    """A Fernet key as given (32 url-safe base64 bytes), or one derived from a passphrase."""
    try:
        if len(base64.urlsafe_b64decode(value.encode())) == 32:
            return value.encode()
    except (binascii.Error, ValueError):
        pass
    return _derive(value)


class _Envelope(msgspec.Struct):
    organization_id: str
    service: str
    credentials: Any


class CredentialCipher:
    def __init__(self, security: SecuritySettings) -> None:
        keys = []
        if security.credentials_key:
            keys.append(Fernet(_as_fernet_key(security.credentials_key)))
        keys.append(Fernet(_derive(security.secret_key)))
        self._fernet = MultiFernet(keys)

    def encrypt(self, organization_id: UUID, service: str, credentials: Any) -> str:
        """Encrypt ``credentials`` (JSON-able builtins) for this organization and service."""
        plain = msgspec.json.encode(_Envelope(str(organization_id), service, credentials))
        return self._fernet.encrypt(plain).decode()

    def decrypt(self, organization_id: UUID, service: str, token: str) -> Any:
        """The credentials (builtins) stored in ``token``; :class:`CredentialsUnavailable` if unusable."""
        try:
            envelope = msgspec.json.decode(self._fernet.decrypt(token.encode()), type=_Envelope)
        except (InvalidToken, msgspec.DecodeError, ValueError) as exc:
            raise CredentialsUnavailable(
                f"The stored {service} credentials cannot be decrypted (has the key changed?); save them again."
            ) from exc
        if envelope.organization_id != str(organization_id) or envelope.service != service:
            raise CredentialsUnavailable(f"The stored {service} credentials belong to another owner; save them again.")
        return envelope.credentials
