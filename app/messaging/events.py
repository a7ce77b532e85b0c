"""The ``data`` of the messaging webhook events: a message as the API returns it (without its attempts,
which would cost a query per transition on the send path)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import msgspec

from app.messaging import schemas
from app.messaging.models import Message

_FIELDS = tuple(f for f in schemas.Message.__struct_fields__ if f != "attempts")
#: the columns :func:`app.messaging.state.move` reads back (RETURNING) to build the event
COLUMNS = tuple(Message.__table__.c[("reply_to_id" if f == "reply_to" else f)] for f in _FIELDS)


def message_payload(values: Mapping[str, Any] | Message) -> dict[str, Any]:
    """``values``: a message, or a mapping of its columns (a RETURNING row)."""
    get = values.get if isinstance(values, Mapping) else lambda name: getattr(values, name)
    out: dict[str, Any] = {}
    for field in _FIELDS:
        value = get("reply_to_id" if field == "reply_to" else field)
        out[field] = value.value if isinstance(value, enum.Enum) else value
    return msgspec.to_builtins(out)
