"""Encryption of service credentials at rest (Fernet: AES-128-CBC + HMAC-SHA256).

The keys are ``VOLUBLE_CREDENTIALS_KEY``, a comma-separated list, newest first (each a Fernet key, or a
passphrase without commas, which is stretched with HKDF): the first encrypts, any of them decrypts. The key
derived from ``VOLUBLE_SECRET_KEY`` with HKDF is always the last one tried (and the one that encrypts when
no credentials key is set), so tokens written before a credentials key was introduced stay readable.

Rotating a key without downtime: ``VOLUBLE_CREDENTIALS_KEY=new,old`` on every process, then
``voluble credentials rotate-key`` (app/cli_credentials.py) re-encrypts every row under the new key, then
the old key is dropped. See the README, "Rotating the credentials key".

Each token binds the organization and the service it belongs to: a ciphertext copied into another
organization's row (or another service's) does not decrypt to usable credentials.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Protocol
from uuid import UUID

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.plugins.base import PluginError


class CipherKeys(Protocol):
    """Where the keys come from (``app.config.SecuritySettings``; the SDK does not import the host)."""

    @property
    def secret_key(self) -> str: ...

    @property
    def credentials_keys(self) -> tuple[str, ...]: ...


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
    def __init__(self, security: CipherKeys) -> None:
        configured = [Fernet(_as_fernet_key(key)) for key in security.credentials_keys]
        legacy = Fernet(_derive(security.secret_key))
        self._primary = configured[0] if configured else legacy
        self._fernet = MultiFernet([*configured, legacy])

    def is_current(self, token: str) -> bool:
        """Whether ``token`` is encrypted under the newest key (nothing to rotate)."""
        try:
            self._primary.decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted under the newest key (same contents); :class:`CredentialsUnavailable` if no
        configured key opens it."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise CredentialsUnavailable("No configured key decrypts these credentials.") from exc

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
