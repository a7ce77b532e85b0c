"""Moved to :mod:`app.db.scoping` (it knows no domain); kept so existing imports keep working."""

from app.db.scoping import OrgScopedRepository, OrgScopedService

__all__ = ["OrgScopedRepository", "OrgScopedService"]
