"""Response types of the ``/services`` resource (msgspec). Credentials are never part of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec


class Service(msgspec.Struct, kw_only=True):
    name: str
    title: str
    #: the contact field the service sends to; null for services addressing the organization's endpoint
    address_field: str | None
    status: Literal["available", "blacklisted"]
    #: why the service is blacklisted
    reason: str | None
    checked_at: datetime | None
    needs_credentials: bool
    #: whether the caller's organization has saved credentials for it
    has_credentials: bool


class ServiceDetail(Service, kw_only=True):
    description: str = ""
    #: JSON Schema of the credentials object ``PUT /services/{name}/credentials`` takes (null: none needed)
    credentials_schema: dict[str, Any] | None = None


def credentials_schema(credentials_type: type[msgspec.Struct] | None) -> dict[str, Any] | None:
    """The JSON Schema of a credentials type, inlined (no top-level ``$ref``)."""
    if credentials_type is None:
        return None
    schema = msgspec.json.schema(credentials_type)
    defs: dict[str, Any] = dict(schema.get("$defs", {}))
    ref = schema.get("$ref", "")
    if not ref.startswith("#/$defs/"):
        return schema
    out = dict(defs.pop(ref.removeprefix("#/$defs/")))
    if defs:
        out["$defs"] = defs
    return out
