"""The browser pages (HTMX), served from ``/``."""

from __future__ import annotations

from litestar import Router

WEB_CONTROLLERS: list[type] = []


def make_web_router() -> Router:
    return Router(path="/", route_handlers=WEB_CONTROLLERS, include_in_schema=False)
