"""Response types of the ``/services`` resource (msgspec). Credentials are never part of them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from app.servicehost.ratelimit import MAX_RATE, MIN_RATE

#: the key of the credentials object (and the field) that holds an organization's own send rate
RATE_FIELD = "rate_per_second"

RatePerSecond = Annotated[
    float,
    msgspec.Meta(
        ge=MIN_RATE,
        le=MAX_RATE,
        description="Sends per second this organization allows itself on the service; at most the service's own rate.",
    ),
]


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
    #: the sends per second the service allows (the plugin's ``rate_per_second``); null: no limit
    default_rate_per_second: float | None = None
    #: the lower rate the caller's organization set on its credentials; null: the default holds
    rate_per_second: float | None = None


class ServiceDetail(Service, kw_only=True):
    description: str = ""
    #: JSON Schema of the credentials object ``PUT /services/{name}/credentials`` takes (null: none needed)
    credentials_schema: dict[str, Any] | None = None


class CredentialsRateUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PATCH /services/{name}/credentials``: the organization's own send rate on the service, without
    saving the credentials again (null: back to the service's own rate)."""

    rate_per_second: RatePerSecond | None


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
