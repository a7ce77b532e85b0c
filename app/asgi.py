"""ASGI entry point: ``create_app()`` is the one place that wires the application."""

from __future__ import annotations

from litestar import Litestar

from app.config import Settings, get_settings
from app.core import CorePlugin


def create_app(settings: Settings | None = None) -> Litestar:
    return Litestar(plugins=[CorePlugin(settings or get_settings())])
