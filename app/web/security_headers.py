"""Security headers on every answer of the app: CSP, framing, sniffing, referrer, and no caching.

Set once, in a ``before_send`` hook, so they also reach answers no route handler made (404, 405,
errors raised by middleware, the static files and the API docs). A header a handler set itself wins
(e.g. ``Referrer-Policy: no-referrer`` on the pages that show a secret once).

Caching: every answer except the static assets is ``Cache-Control: no-store``. Pages are signed in or
carry a CSRF token, API answers are tenant data or secrets (a new client secret, an access token), so
"not cacheable" is the default that a new endpoint cannot forget; the static files keep their ETag and
Last-Modified and stay cacheable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

from app.config import ServerSettings

#: ``style-src`` has no ``'unsafe-inline'``: htmx's indicator styles are turned off in base.html's
#: ``htmx-config`` (``includeIndicatorStyles: false``) and live in app.css; Swagger UI sets styles through
#: the CSSOM only, which a CSP does not restrict.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "object-src 'none'",
    ]
)

SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}
#: a year, once the site is served over HTTPS (``VOLUBLE_PUBLIC_URL=https://…``)
HSTS = "max-age=31536000"
NO_STORE = "no-store"
CACHEABLE_PREFIX = "/static/"


def security_headers_hook(server: ServerSettings) -> Callable[[Message, Scope], Awaitable[None]]:
    """The ``before_send`` hook adding the headers to each HTTP answer's start message."""
    headers = dict(SECURITY_HEADERS)
    if server.public_url.startswith("https://"):
        headers["strict-transport-security"] = HSTS

    async def add_security_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        out = MutableScopeHeaders.from_message(message)
        for name, value in headers.items():
            if out.get(name) is None:
                out[name] = value
        if out.get("cache-control") is None and not scope.get("path", "").startswith(CACHEABLE_PREFIX):
            out["cache-control"] = NO_STORE

    return add_security_headers
