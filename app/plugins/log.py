"""The ``log`` service: appends each message as one JSON line to ``<var_dir>/outbox.jsonl``.

It needs no credentials and no network, and always works: the default chain of the embedded run, of
demos and of the benchmark. Each line is written with a single ``write()`` on a file opened with
``O_APPEND``, so concurrent workers (threads or processes) never interleave their lines.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from uuid import uuid4

import msgspec

from app.plugins.base import (
    Inbound,
    OutgoingMessage,
    PluginContext,
    PluginInfo,
    Receipt,
    SelfTestError,
    SendError,
    SignatureError,
    WebhookRequest,
)

OUTBOX = "outbox.jsonl"


def outbox_path(var_dir: Path) -> Path:
    return var_dir / OUTBOX


class LogPlugin:
    info: ClassVar[PluginInfo] = PluginInfo(
        name="log",
        title="Log (local outbox)",
        address_field=None,
        credentials_type=None,
        description=f"Writes every message as a JSON line to {OUTBOX} in the data directory. Always works.",
    )

    def __init__(self, context: PluginContext) -> None:
        self.context = context
        self.path = outbox_path(context.var_dir)

    async def self_test(self) -> None:
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SelfTestError(f"Cannot create {directory}: {exc.strerror or exc}") from exc
        if not os.access(directory, os.W_OK | os.X_OK):
            raise SelfTestError(f"{directory} is not writable.")
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise SelfTestError(f"{self.path} is not writable.")

    async def validate_credentials(self, credentials: Any) -> None:
        return None

    async def send(self, message: OutgoingMessage, address: str | None, credentials: Any) -> str:
        provider_id = str(uuid4())
        contact = message.contact
        record = {
            "provider_message_id": provider_id,
            "message_id": str(message.id),
            "organization_id": str(message.organization_id),
            "contact_id": str(contact.id),
            "contact": {
                "title": contact.title,
                "first_name": contact.first_name,
                "surname": contact.surname,
                "phone": contact.phone,
                "email": contact.email,
                "telegram_chat_id": contact.telegram_chat_id,
            },
            "address": address,
            "subject": message.subject,
            "content": message.content,
            "reply_to_provider_id": message.reply_to_provider_id,
            "logged_at": datetime.now(UTC).isoformat(),
        }
        try:
            line = msgspec.json.encode(record) + b"\n"
        except (TypeError, msgspec.EncodeError) as exc:  # pragma: no cover - every field above is JSON
            raise SendError(f"Cannot encode the message: {exc}") from exc
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                written = os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            raise SendError(f"Cannot write the outbox {self.path}: {exc.strerror or exc}") from exc
        if written != len(line):
            raise SendError(f"Short write to the outbox {self.path} (disk full?).")
        return provider_id

    async def parse_webhook(self, request: WebhookRequest, credentials: Any) -> list[Receipt | Inbound]:
        raise SignatureError("The log service receives no callbacks.")
