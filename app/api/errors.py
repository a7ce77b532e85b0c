"""RFC 9457 problem details for every error of ``/api`` (and JSON errors for ``/oauth``)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from litestar import Request, Response

from app.errors import classify, log_server_error

PROBLEM_JSON = "application/problem+json"


def problem(status: int, detail: str, errors: list[dict[str, Any]] | None = None, **extra: Any) -> Response[Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    headers = extra.pop("headers", None) or {}
    body.update(extra)
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def api_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, detail, errors, headers = classify(exc)
    log_server_error(request, status, exc)
    return problem(status, detail, errors, headers=headers)
