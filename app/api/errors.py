"""RFC 9457 problem details for every error of ``/api`` (and JSON errors for ``/oauth``)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from advanced_alchemy.exceptions import (
    DuplicateKeyError,
    ForeignKeyError,
    IntegrityError,
    NotFoundError,
    RepositoryError,
)
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy import exc as sa_exc

from app.db.config import database_message, is_busy_error
from app.logging import get_logger
from app.messaging.credits import InsufficientCredits
from app.tenants.services import Conflict, Forbidden, ValidationProblem
from app.textfields import explain

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
#: a database lock held too long, a serialization failure, no free connection: try again shortly
BUSY_DETAIL = "The database is busy right now. Try again in a few seconds."
BUSY_RETRY_AFTER = "2"


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


def _validation_errors(extra: Any) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    if isinstance(extra, list):
        for item in extra:
            if isinstance(item, dict):
                errors.append(
                    {
                        "field": item.get("key"),
                        "message": item.get("message"),
                        "source": item.get("source"),
                    }
                )
    return errors


def classify(exc: Exception) -> tuple[int, str, list[dict[str, Any]] | None, dict[str, str]]:
    """(status, detail, field errors, headers) for any exception."""
    if isinstance(exc, ValidationException):
        detail = exc.detail or "Validation failed"
        fields = _validation_errors(exc.extra)
        status = exc.status_code
        for error in fields:
            # a text rule (app.textfields, e.g. no control characters): well-formed but refused content
            if rule := explain(error["message"]):
                error["message"], status, detail = rule, 422, f"{error['field'] or 'A field'}: {rule}"
        return status, detail, fields, dict(exc.headers or {})
    if isinstance(exc, HTTPException):
        return exc.status_code, exc.detail, None, dict(exc.headers or {})
    if isinstance(exc, RecursionError) and "deserializ" in str(exc):
        # msgspec gives up on a body nested deeper than it recurses: bad input, not a server fault
        return 400, "The request body is nested too deeply.", None, {}
    if is_busy_error(exc):  # before the repository errors: advanced-alchemy wraps it as one of them
        return 503, BUSY_DETAIL, None, {"Retry-After": BUSY_RETRY_AFTER}
    if isinstance(exc, ValidationProblem):
        errors = [{"field": exc.field, "message": exc.detail, "source": "body"}] if exc.field else None
        many = getattr(exc, "errors", None)  # several fields at once, e.g. app.contacts.services.FieldErrors
        if isinstance(many, dict) and many:
            errors = [{"field": f, "message": m, "source": "body"} for f, m in many.items()]
        return 422, exc.detail, errors, {}
    if isinstance(exc, InsufficientCredits):
        return 402, str(exc), None, {}
    if isinstance(exc, Forbidden):
        return 403, str(exc), None, {}
    if isinstance(exc, NotFoundError):
        return 404, "Not found.", None, {}
    if isinstance(exc, Conflict):
        return 409, str(exc), None, {}
    if isinstance(exc, DuplicateKeyError | IntegrityError | ForeignKeyError | sa_exc.IntegrityError):
        return 409, "This conflicts with existing data.", None, {}
    if isinstance(exc, RepositoryError):
        return 409, "The request could not be applied to the current data.", None, {}
    return HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error.", None, {}


def log_server_error(request: Request[Any, Any, Any], status: int, exc: Exception) -> None:
    """A busy database is logged as a warning (with the error); anything else of ours with its traceback."""
    if status == 503 and is_busy_error(exc):
        log.warning("database busy", path=request.url.path, method=request.method, error=database_message(exc))
    elif status >= 500:
        log.exception("unhandled error", path=request.url.path, method=request.method)


def api_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, detail, errors, headers = classify(exc)
    log_server_error(request, status, exc)
    return problem(status, detail, errors, headers=headers)
