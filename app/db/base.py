"""Declarative base shared by every model: UUID primary keys plus created_at/updated_at."""

from __future__ import annotations

from advanced_alchemy.base import UUIDAuditBase, orm_registry

Base = UUIDAuditBase
metadata = orm_registry.metadata

__all__ = ["Base", "metadata"]
