"""organization API rate limit

Revision ID: 0012_org_api_rate_limit
Revises: 0011_stats_rollup
Create Date: 2026-12-01 15:50:00.000000

``organization.api_rate_limit``: the API requests a minute per token (or API client) a sysadmin gave
the organization; NULL is the instance default (``VOLUBLE_API_RATE_LIMIT``). A nullable column without
constraints: a plain ``ADD COLUMN`` / ``DROP COLUMN`` on every backend (SQLite ≥ 3.35 drops columns in
place), no table copy. See docs/decisions/0034-api-rate-limits.md.
"""

import sqlalchemy as sa
from alembic import op

__all__ = ("downgrade", "upgrade")

# revision identifiers, used by Alembic.
revision = "0012_org_api_rate_limit"
down_revision = "0011_stats_rollup"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("organization", sa.Column("api_rate_limit", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("organization", "api_rate_limit")
