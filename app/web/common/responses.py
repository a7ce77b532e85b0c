"""What the page handlers answer: a page or an htmx fragment, redirects, and the two tails of an action
(it worked: flash, then the row or a redirect; it cannot be applied: the message, the row left as it is)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response
from litestar.plugins.flash import flash
from litestar.plugins.htmx import HTMXDetails
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.tenants.guards import principal_of
from app.tenants.principal import Principal

#: a fragment of nothing but the flashes, swapped out of band (after a row was removed)
OOB_FLASHES = "partials/_oob_flashes.html"
#: where a fragment answer shows a message instead of swapping its target
TO_FLASHES = {"HX-Retarget": "#flashes", "HX-Reswap": "innerHTML"}


def provide_web_principal(request: Request[Any, Any, Any]) -> Principal:
    return principal_of(request)


def wants_fragment(request: Request[Any, Any, Any], target: str | None = None) -> bool:
    """True for an htmx request that swaps part of a page (not a boosted navigation or a history restore),
    and, given ``target``, one that swaps the element with that id."""
    htmx = HTMXDetails(request)
    if not htmx or htmx.boosted or htmx.history_restore_request:
        return False
    return target is None or htmx.target == target


def page(template: str, context: dict[str, Any], status: int = 200, **kwargs: Any) -> Template:
    return Template(template_name=template, context=context, status_code=status, **kwargs)


def flash_fragment(
    message: str, category: str = "error", status: int = 200, headers: dict[str, str] | None = None
) -> Template:
    """For an htmx action that cannot be applied: the message in the page's message area."""
    context = {"message": message, "category": category}
    return page("partials/_flash_message.html", context, status=status, headers={**(headers or {}), **TO_FLASHES})


async def see_other(db_session: AsyncSession | None, url: str) -> Redirect:
    """Commit, then redirect (303) to a page: the session plugin only commits on 2xx by itself."""
    if db_session is not None:
        await db_session.commit()
    return Redirect(url, status_code=303)


async def done(
    request: Request[Any, Any, Any],
    db_session: AsyncSession,
    message: str,
    back: str,
    fragment: str | Callable[[], Awaitable[Response[Any]]] = OOB_FLASHES,
    context: dict[str, Any] | None = None,
    *,
    category: str = "success",
) -> Response[Any]:
    """The tail of an action that worked: flash ``message`` and commit; then, for htmx, ``fragment`` (a
    template rendered with ``context`` and the flashes out of band, or a coroutine function answering),
    else a redirect to ``back``."""
    flash(request, message, category)
    if not wants_fragment(request):
        return await see_other(db_session, back)
    await db_session.commit()
    if callable(fragment):
        return await fragment()
    return page(fragment, {**(context or {}), "oob_flashes": True})


async def refused(request: Request[Any, Any, Any], problem: str, back: str, *, status: int = 200) -> Response[Any]:
    """The tail of an action that cannot be applied: for htmx the message in the page's message area (the
    row stays as it is), else the message flashed on ``back``."""
    if wants_fragment(request):
        return flash_fragment(problem, status=status)
    flash(request, problem, "error")
    return await see_other(None, back)


def safe_local_path(value: str | None, default: str = "/") -> str:
    """``value`` if it is a path on this site (no scheme, no host, no ``//`` or backslash tricks)."""
    if not value:
        return default
    value = value.strip()
    if not value.startswith("/") or value.startswith("//") or "\\" in value or any(ord(c) < 32 for c in value):
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def no_store(response: Response[Any]) -> Response[Any]:
    """Pages that show a secret once must not be kept by caches."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def add_vary(response: Response[Any]) -> Response[Any]:
    """The same URL answers a full page or a fragment depending on ``HX-Request``."""
    vary = response.headers.get("Vary")
    if not vary:
        response.headers["Vary"] = "HX-Request"
    elif "hx-request" not in vary.lower():
        response.headers["Vary"] = f"{vary}, HX-Request"
    return response
