"""``GET /metrics``: Prometheus text format, behind the bearer token of ``VOLUBLE_METRICS_TOKEN``.

No token configured: the endpoint does not exist (404). A missing or wrong token: 401. The token is
compared in constant time. What is in the answer: app/metrics.py, docs/decisions/0033.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException
from sqlalchemy.ext.asyncio import AsyncSession

from app import metrics
from app.config import Settings
from app.errors import NotFound
from app.logging import get_logger
from app.servicehost.registry import AVAILABLE, service_statuses

log = get_logger(__name__)


def _authorize(request: Request[Any, Any, Any], token: str) -> None:
    if not token:
        raise NotFound("metrics are off: set VOLUBLE_METRICS_TOKEN")
    if not metrics.authorized(request.headers.get("authorization", ""), token):
        raise NotAuthorizedException(
            "A valid metrics bearer token is required.", headers={"WWW-Authenticate": "Bearer"}
        )


async def _services(db_session: AsyncSession) -> dict[str, bool] | None:
    try:
        rows = await service_statuses(db_session)
    except Exception as exc:  # the scrape still answers; voluble_metrics_source_up{source="database"} says 0
        log.warning("metrics: service status unreadable", error=repr(exc)[:200])
        return None
    return {name: row.status == AVAILABLE for name, row in rows.items()}


@get("/metrics", include_in_schema=False, exclude_from_auth=True, cache=False)
async def metrics_endpoint(
    request: Request[Any, Any, Any], settings: Settings, state: State, db_session: AsyncSession
) -> Response[bytes]:
    _authorize(request, settings.metrics.token)
    body = await metrics.scrape(state.queues, await _services(db_session))
    return Response(body, media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"})
