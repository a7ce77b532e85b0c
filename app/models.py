"""Imports every model module so the metadata is complete (alembic, create_all).

It sits above the domains, not in ``app.db``, so that ``app.db`` imports no domain."""

from app.audit import models as audit  # noqa: F401
from app.blasts import models as blasts  # noqa: F401
from app.contacts import models as contacts  # noqa: F401
from app.messaging import models as messaging  # noqa: F401
from app.servicehost import models as servicehost  # noqa: F401
from app.tenants import models as tenants  # noqa: F401
from app.webhooks import models as webhooks  # noqa: F401
