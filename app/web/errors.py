"""Errors on browser pages: a readable page (or fragment), and the login page when not signed in."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.response import Redirect, Template

from app.db.config import is_busy_error
from app.errors import classify, log_server_error
from app.web.common import flash_fragment, wants_fragment

TITLES = {
    400: "That request did not work",
    403: "You cannot open this page",
    404: "Page not found",
    405: "That action is not available here",
    409: "That conflicts with existing data",
    413: "That is too large",
    422: "Some of that needs fixing",
    429: "Slow down a little",
    503: "Busy right now",
}
BUSY_PAGE = "The system is very busy right now. Please try again in a few seconds."


def web_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status, detail, _, headers = classify(exc)
    log_server_error(request, status, exc)
    if status == 503 and is_busy_error(exc):
        detail = BUSY_PAGE
    elif status >= 500:
        detail = "Something went wrong on our side. It has been logged; please try again."
    if status == 401:
        # Only a page can be returned to: after a POST, go back home rather than to a form handler.
        target = f"/login?next={quote(request.url.path)}" if request.method == "GET" else "/login"
        if request.headers.get("hx-request"):
            return Response(content="", status_code=200, headers={"HX-Redirect": target, "Vary": "HX-Request"})
        return Redirect(target)
    if status == 403 and "csrf" in detail.lower():
        detail = "Your form expired or was not sent from this site. Reload the page and try again."
    if status == 404:
        detail = "There is nothing here, or it is not yours to see."
    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    headers["Vary"] = "HX-Request"
    if wants_fragment(request):
        # A part of a page asked for this: show the problem in the page's message area instead of
        # swapping an error page into a table row.
        return flash_fragment(detail, status=status, headers=headers)
    return Template(
        template_name="error.html",
        context={"status": status, "detail": detail, "title": TITLES.get(status, "Something went wrong")},
        status_code=status,
        headers=headers,
    )
