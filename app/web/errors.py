"""Errors on browser pages: a readable page (or fragment), and the login page when not signed in."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.response import Redirect, Template

from app.api.errors import classify
from app.logging import get_logger

log = get_logger(__name__)


def web_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, detail, _, headers = classify(exc)
    if status >= 500:
        log.exception("unhandled error", path=request.url.path, method=request.method)
    if status == 401:
        target = f"/login?next={quote(request.url.path)}"
        if request.headers.get("hx-request"):
            return Response(content="", status_code=200, headers={"HX-Redirect": target})
        return Redirect(target)
    if status == 403 and "csrf" in detail.lower():
        detail = "Your form expired or was not sent from this site. Reload the page and try again."
    return Template(
        template_name="error.html",
        context={"status": status, "detail": detail},
        status_code=status,
        headers={k: v for k, v in headers.items() if k.lower() != "content-type"},
    )
