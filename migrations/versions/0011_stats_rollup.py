"""the dashboard's counts per closed day (message_stats_day, message_stats_rollup)

Revision ID: 0011_stats_rollup
Revises: 0010_send_rate_override
Create Date: 2026-12-01 16:00:00.000000

A window of 30 days reads about 30 small rows per figure instead of every message in it
(docs/decisions/0032-stats-rollup.md); the rows are written by a worker's cron job, never on the send path.
"""

import warnings

import sqlalchemy as sa
from alembic import op
from advanced_alchemy.types import GUID, DateTimeUTC

__all__ = ("downgrade", "upgrade")

# revision identifiers, used by Alembic.
revision = "0011_stats_rollup"
down_revision = "0010_send_rate_override"
branch_labels = None
depends_on = None


def _audit_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        op.create_table(
            "message_stats_day",
            sa.Column("id", GUID(length=16), nullable=False),
            sa.Column("organization_id", GUID(length=16), nullable=False),
            sa.Column("day", sa.Date(), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("key", sa.String(length=64), nullable=False),
            sa.Column("subkey", sa.String(length=32), nullable=False),
            sa.Column("count", sa.Integer(), nullable=False),
            *_audit_columns(),
            sa.ForeignKeyConstraint(
                ["organization_id"],
                ["organization.id"],
                name=op.f("fk_message_stats_day_organization_id_organization"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_message_stats_day")),
        )
        op.create_index("ix_message_stats_day_org_day", "message_stats_day", ["organization_id", "day"])
        op.create_table(
            "message_stats_rollup",
            sa.Column("id", GUID(length=16), nullable=False),
            sa.Column("organization_id", GUID(length=16), nullable=False),
            sa.Column("rolled_until", sa.Date(), nullable=False),
            sa.Column("fresh_as_of", DateTimeUTC(timezone=True), nullable=False),
            *_audit_columns(),
            sa.ForeignKeyConstraint(
                ["organization_id"],
                ["organization.id"],
                name=op.f("fk_message_stats_rollup_organization_id_organization"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_message_stats_rollup")),
        )
        op.create_index(
            op.f("ix_message_stats_rollup_organization_id"), "message_stats_rollup", ["organization_id"], unique=True
        )


def downgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        op.drop_index(op.f("ix_message_stats_rollup_organization_id"), table_name="message_stats_rollup")
        op.drop_table("message_stats_rollup")
        op.drop_index("ix_message_stats_day_org_day", table_name="message_stats_day")
        op.drop_table("message_stats_day")
