"""blast throughput: the batch job of an attempt, the audience snapshotted by the fan-out

Revision ID: 0009_blast_throughput
Revises: 0008_stats_indexes
Create Date: 2026-12-01 16:00:00.000000

``message_attempt.job_key``: the ``send_batch`` job that carries an attempt of blast traffic (the sweep
finds a stale attempt's job by it). ``blast.selection``: the audience as the request named it, until the
first fan-out step snapshots it (docs/decisions/0029-blast-throughput.md).
"""

import sqlalchemy as sa
from advanced_alchemy.types import JsonB
from alembic import op

__all__ = ("downgrade", "upgrade")

# revision identifiers, used by Alembic.
revision = "0009_blast_throughput"
down_revision = "0008_stats_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN on both databases (a batch would rebuild SQLite's tables, reflecting GUIDs as NUMERIC)
    op.add_column("message_attempt", sa.Column("job_key", sa.String(length=64), nullable=True))
    op.add_column("blast", sa.Column("selection", JsonB, nullable=True))


def downgrade() -> None:
    op.drop_column("blast", "selection")
    op.drop_column("message_attempt", "job_key")
