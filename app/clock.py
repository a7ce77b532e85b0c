"""The one clock of the application: an aware UTC ``datetime`` (every package may import this)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
