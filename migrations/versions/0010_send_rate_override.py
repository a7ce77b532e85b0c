"""per-organization send rate of a service

Revision ID: 0010_send_rate_override
Revises: 0009_blast_throughput
Create Date: 2026-12-01 16:00:00.000000

``service_credential.rate_per_second``: the sends per second an organization allows itself on a
service (null: the plugin's own ``rate_per_second``). Not a secret, so it sits beside the
ciphertext, where the send rate limiter reads it without decrypting anything
(docs/decisions/0030-send-rate-limits.md). Adding a nullable column needs no table copy; the
downgrade's batch copy of ``service_credential`` is safe (no table references it).
"""

import sqlalchemy as sa
from alembic import op

__all__ = ("downgrade", "upgrade")

# revision identifiers, used by Alembic.
revision = "0010_send_rate_override"
down_revision = "0009_blast_throughput"
branch_labels = None
depends_on = None

TABLE = "service_credential"
COLUMN = "rate_per_second"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column(COLUMN, sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column(COLUMN)
