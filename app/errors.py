"""The errors of the domain, each with its HTTP status, and :func:`classify`, the one mapping of any
exception to what the user is told. ``app.api.errors`` renders it as problem details, ``app.web.errors``
as a page; domain packages raise these and import nothing of either face."""

from __future__ import annotations

from typing import Any, ClassVar

from advanced_alchemy.exceptions import (
    DuplicateKeyError,
    ForeignKeyError,
    IntegrityError,
    NotFoundError,
    RepositoryError,
)
from litestar import Request
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy import exc as sa_exc

from app.db.config import database_message, is_busy_error
from app.logging import get_logger
from app.textfields import explain

log = get_logger(__name__)

#: a database lock held too long, a serialization failure, no free connection: try again shortly
BUSY_DETAIL = "The database is busy right now. Try again in a few seconds."
BUSY_RETRY_AFTER = "2"
NOT_FOUND_DETAIL = "Not found."


class ValidationProblem(Exception):
    """A business-rule violation on input: answered as 422 with field errors."""

    status_code: ClassVar[int] = 422

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class FieldErrors(ValidationProblem):
    """Several field-level problems at once (422 with one ``errors`` entry per field)."""

    def __init__(self, errors: dict[str, str], detail: str | None = None) -> None:
        first = next(iter(errors))
        super().__init__(detail or "; ".join(f"{field}: {message}" for field, message in errors.items()), first)
        self.errors = errors


class BadRequest(Exception):
    """A request we cannot read at all (a malformed provider callback, say): 400."""

    status_code: ClassVar[int] = 400


class RequestTooLarge(Exception):
    """A body larger than this endpoint reads: 413."""

    status_code: ClassVar[int] = 413


class PaymentRequired(Exception):
    """402: a pay-in-advance organization has no unreserved credit left."""

    status_code: ClassVar[int] = 402


class Forbidden(Exception):
    """The caller may not do this (403)."""

    status_code: ClassVar[int] = 403


class NotFound(NotFoundError):
    """Nothing with this id, or not the caller's (404). advanced-alchemy's ``NotFoundError``, which the
    repositories raise, is answered the same way."""

    status_code: ClassVar[int] = 404


class Conflict(Exception):
    """The request conflicts with existing data (409)."""

    status_code: ClassVar[int] = 409


class TooManyRequests(Exception):
    """429: a request budget is spent (``app/tenants/request_limits.py``); ``headers`` carry
    ``Retry-After`` and the ``RateLimit-*`` fields."""

    status_code: ClassVar[int] = 429

    def __init__(self, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.headers = headers


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


def _field_errors(exc: ValidationProblem) -> list[dict[str, Any]] | None:
    if isinstance(exc, FieldErrors) and exc.errors:
        return [{"field": f, "message": m, "source": "body"} for f, m in exc.errors.items()]
    return [{"field": exc.field, "message": exc.detail, "source": "body"}] if exc.field else None


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
        return exc.status_code, exc.detail, _field_errors(exc), {}
    if isinstance(exc, BadRequest | RequestTooLarge | PaymentRequired | Forbidden | Conflict):
        return exc.status_code, str(exc), None, {}
    if isinstance(exc, TooManyRequests):
        return exc.status_code, str(exc), None, dict(exc.headers)
    if isinstance(exc, NotFoundError):
        return NotFound.status_code, NOT_FOUND_DETAIL, None, {}
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
