"""Every operation of the API documents the errors it can answer, as RFC 9457 problem details.

Litestar documents a handler's success response and whatever the handler lists in ``responses``; it
has no layered default. The errors of this API are the same across its operations (``app.errors``:
bad input, authentication, scope or role, a missing or another organization's resource, conflicts,
validation, the rate limit, a busy database), so they are added here to every operation once the
routes are known, by method and by whether the path names a resource. A handler's own ``responses``
(a 402 of ``POST /messages``, say) win.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi.datastructures import ResponseSpec
from litestar.routes import HTTPRoute

from app.api.errors import PROBLEM_JSON


class FieldProblem(msgspec.Struct):
    field: str | None
    message: str
    source: str | msgspec.UnsetType = msgspec.UNSET


class Problem(msgspec.Struct):
    """RFC 9457 problem details, as every error of ``/api`` is answered."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | msgspec.UnsetType = msgspec.UNSET


#: what every authenticated API operation may answer
COMMON = {
    400: "Bad request: a malformed body, parameter or header.",
    401: "Missing, unknown, expired or revoked bearer token.",
    403: "The token lacks the scope, or the caller the role, this operation needs.",
    404: "No such resource in your organization (named in the path, the body or the query); "
    "another organization's id answers the same.",
    422: "The input is well-formed but invalid; `errors` names each field.",
    429: "Too many requests for this token; see `Retry-After`.",
    503: "The database is busy; retry after a moment.",
}
#: also answered by operations that change something
ON_CHANGE = {409: "The change conflicts with the resource's current state.", 413: "The request body is too large."}
CHANGES = {"POST", "PUT", "PATCH", "DELETE"}


class OAuthError(msgspec.Struct):
    """An RFC 6749 §5.2 error of the token endpoint."""

    error: str
    error_description: str | msgspec.UnsetType = msgspec.UNSET


def _spec(description: str, container: type = Problem, media_type: str = PROBLEM_JSON) -> ResponseSpec:
    return ResponseSpec(
        data_container=container, description=description, media_type=media_type, generate_examples=False
    )


def problem_responses(errors: dict[int, str]) -> dict[int, ResponseSpec]:
    """``responses=`` for a handler outside ``/api`` answering problem details."""
    return {status: _spec(description) for status, description in errors.items()}


def oauth_responses(errors: dict[int, str]) -> dict[int, ResponseSpec]:
    """``responses=`` for the token endpoint, which answers OAuth's own error bodies."""
    return {status: _spec(text, OAuthError, "application/json") for status, text in errors.items()}


def errors_for(method: str) -> dict[int, str]:
    errors = dict(COMMON)
    if method in CHANGES:
        errors.update(ON_CHANGE)
    return errors


def document_errors(app: Litestar, prefix: str = "/api/") -> None:
    """Add the API's error responses to every operation under ``prefix`` (call before the schema is built)."""
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith(prefix):
            continue
        for handler in route.route_handlers:
            if not handler.include_in_schema:
                continue
            responses: dict[int, Any] = dict(handler.responses or {})
            for method in handler.http_methods:
                for status, description in errors_for(method).items():
                    responses.setdefault(status, _spec(description))
            handler.responses = responses
