"""Live fragments: a part of a page that asks for itself again every few seconds (htmx polling), answered
``304 Not Modified`` when nothing it shows has changed (decision 0028).

The fragment renders its own ETag into ``data-etag``; ``static/js/app.js`` sends it back as
``If-None-Match`` on the next poll and keeps the fragment as it is on a 304. The ETag comes from a cheap
query (the latest ``updated_at`` of the organization's messages, one step on an index) plus whatever else
the fragment depends on (its filters and page, the organization, the day), so a 304 costs one indexed
lookup instead of the page's queries and its rendering.
"""

from __future__ import annotations

import hashlib
from typing import Any

from litestar import Request, Response

from app.web.common.responses import wants_fragment


def etag_of(*parts: Any) -> str:
    """A strong ETag (quoted) of what a fragment shows."""
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:32]
    return f'"{digest}"'


def matches(request: Request[Any, Any, Any], etag: str) -> bool:
    """True when the request's ``If-None-Match`` names ``etag`` (or is ``*``)."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in tags or "*" in tags


def not_modified(request: Request[Any, Any, Any], etag: str, target: str) -> Response[Any] | None:
    """A 304 for a poll of fragment ``target`` that already shows this version, else None."""
    if wants_fragment(request, target) and matches(request, etag):
        return Response(content=b"", status_code=304, headers={"ETag": etag})
    return None
