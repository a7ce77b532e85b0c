"""The one clock of the application: an aware UTC ``datetime`` (every package may import this)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def aware(value: datetime) -> datetime: ...
@overload
def aware(value: None) -> None: ...
def aware(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC time: SQLite hands back naive datetimes for the UTC values we stored."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
