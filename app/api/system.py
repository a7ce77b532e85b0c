"""Liveness, readiness and the OAuth 2 token endpoint."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from litestar import Request, Response, get, post
from litestar.middleware.base import DefineMiddleware
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.documented_errors import oauth_responses
from app.config import Settings
from app.tenants.oauth import issue_token
from app.tenants.request_limits import RequestLimitMiddleware


@get("/health", tags=["system"], summary="Alive", exclude_from_auth=True)
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/ready",
    tags=["system"],
    summary="Database and Redis reachable",
    exclude_from_auth=True,
    responses={503: ResponseSpec(data_container=dict[str, Any], description="The database or Redis is unreachable.")},
)
async def ready(db_session: AsyncSession, redis: Redis) -> Response[dict[str, Any]]:
    checks: dict[str, str] = {}
    try:
        await db_session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await redis.ping()  # type: ignore[misc]
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return Response({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


@post(
    "/oauth/token",
    tags=["oauth"],
    summary="OAuth 2 token endpoint (client_credentials)",
    status_code=HTTP_200_OK,
    exclude_from_auth=True,
    exclude_from_csrf=True,
    responses=oauth_responses(
        {
            400: "invalid_request, unsupported_grant_type or invalid_scope (RFC 6749 §5.2).",
            401: "invalid_client: unknown client or wrong secret.",
            429: "Too many token requests from this address; see `Retry-After`.",
        }
    ),
    middleware=[DefineMiddleware(RequestLimitMiddleware, kind="oauth")],  # per client IP
)
async def oauth_token(request: Request[Any, Any, Any], db_session: AsyncSession, settings: Settings) -> Response[Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    headers: dict[str, str]
    raw = await request.body()
    if content_type != "application/x-www-form-urlencoded":
        status, body, headers = (
            400,
            {
                "error": "invalid_request",
                "error_description": "Use application/x-www-form-urlencoded (RFC 6749 §4.4.2).",
            },
            {},
        )
    else:
        try:
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            form = None
        if form is None:
            status, body, headers = 400, {"error": "invalid_request", "error_description": "Malformed form body."}, {}
        else:
            uri = f"{settings.server.public_url}/oauth/token"
            status, body, headers = await issue_token(
                db_session,
                uri,
                {k.lower(): v for k, v in request.headers.items()},
                form,
                settings.security.access_token_ttl_seconds,
            )
    headers = {**headers, "Cache-Control": "no-store", "Pragma": "no-cache"}
    headers.pop("Content-Type", None)
    return Response(content=body, status_code=status, headers=headers, media_type="application/json")
