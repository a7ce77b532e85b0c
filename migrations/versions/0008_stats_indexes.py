"""indexes of the dashboard, /api/v1/stats and the live pages

Revision ID: 0008_stats_indexes
Revises: 0007_audit
Create Date: 2026-12-01 13:20:00.000000

The statistics count one organization's messages over a window of days (created_at, sent_at) and
its attempts over the last days (started_at); a live page asks for the latest change (updated_at).
Each is a range on (organization_id, <time>), so each gets that composite index; on PostgreSQL the
columns the counts group by are INCLUDEd, so a count reads the index alone (after VACUUM).
"""

from alembic import op

__all__ = ("downgrade", "upgrade")

# revision identifiers, used by Alembic.
revision = "0008_stats_indexes"
down_revision = "0007_audit"
branch_labels = None
depends_on = None

#: name, table, columns, and the columns PostgreSQL keeps in the index too (INCLUDE: counted from the
#: index alone, without visiting the table; SQLite has no INCLUDE and ignores them)
INDEXES: tuple[tuple[str, str, list[str], list[str]], ...] = (
    (
        "ix_message_org_created",
        "message",
        ["organization_id", "created_at"],
        ["id", "state", "direction", "service", "servicechain_id"],
    ),
    ("ix_message_org_updated", "message", ["organization_id", "updated_at"], []),
    ("ix_message_org_sent", "message", ["organization_id", "sent_at"], ["credit"]),
    (
        "ix_message_attempt_org_started",
        "message_attempt",
        ["organization_id", "started_at"],
        ["service", "outcome", "seq", "message_id"],
    ),
)


def upgrade() -> None:
    for name, table, columns, include in INDEXES:
        op.create_index(name, table, columns, postgresql_include=include or None)


def downgrade() -> None:
    for name, table, _, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
