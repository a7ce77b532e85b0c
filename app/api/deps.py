"""Dependencies shared by the API controllers: the principal, pagination, PATCH bodies.

Services are provided by ``app/tenants/deps.py`` (``org_service(Cls)``, ``service(Cls)``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from advanced_alchemy.filters import LimitOffset
from litestar import Request
from litestar.params import Parameter

from app.tenants.guards import principal_of
from app.tenants.principal import Principal


def changes(data: msgspec.Struct) -> dict[str, Any]:
    """The fields a PATCH body sets (everything not left UNSET), for a service's ``update``."""
    return {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_of(request)


#: the page's query parameters, for a handler that takes them itself (one dependency fewer to resolve)
Limit = Annotated[int, Parameter(query="limit", ge=1, le=500, description="Page size (≤ 500).")]
Offset = Annotated[int, Parameter(query="offset", ge=0, le=2**31 - 1, description="Items to skip.")]


def provide_limit_offset(limit: Limit = 50, offset: Offset = 0) -> LimitOffset:
    return LimitOffset(limit=limit, offset=offset)
