"""Imports every model module so the metadata is complete (alembic, create_all)."""

from app.tenants import models as tenants  # noqa: F401
