"""Imports every model module so the metadata is complete (alembic, create_all)."""

from app.blasts import models as blasts  # noqa: F401
from app.contacts import models as contacts  # noqa: F401
from app.messaging import models as messaging  # noqa: F401
from app.plugins import models as plugins  # noqa: F401
from app.tenants import models as tenants  # noqa: F401
