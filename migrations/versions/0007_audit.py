"""the audit log (audit_entry)

Revision ID: 0007_audit
Revises: 0006_webhooks
Create Date: 2026-12-01 13:10:00.000000

Who changed what, when and from where (docs/decisions/0027-audit-log.md). No foreign keys: an entry
outlives the organization, user or client it names.
"""

import warnings

import sqlalchemy as sa
from alembic import op
from advanced_alchemy.types import GUID, DateTimeUTC

__all__ = ("downgrade", "upgrade")

# revision identifiers, used by Alembic.
revision = "0007_audit"
down_revision = "0006_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        op.create_table(
            "audit_entry",
            sa.Column("id", GUID(length=16), nullable=False),
            sa.Column("at", DateTimeUTC(timezone=True), nullable=False),
            sa.Column("organization_id", GUID(length=16), nullable=True),
            sa.Column("actor_kind", sa.String(length=16), nullable=False),
            sa.Column("actor_id", GUID(length=16), nullable=True),
            sa.Column("actor_name", sa.String(length=320), nullable=False),
            sa.Column("action", sa.String(length=64), nullable=False),
            sa.Column("target_type", sa.String(length=32), nullable=False),
            sa.Column("target_id", sa.String(length=64), nullable=True),
            sa.Column("summary", sa.String(length=500), nullable=False),
            sa.Column("ip", sa.String(length=64), nullable=True),
            sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
            sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
            sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_entry")),
        )
        op.create_index("ix_audit_entry_org_at", "audit_entry", ["organization_id", "at"], unique=False)
        op.create_index("ix_audit_entry_at", "audit_entry", ["at"], unique=False)
        op.create_index(op.f("ix_audit_entry_action"), "audit_entry", ["action"], unique=False)
        op.create_index(op.f("ix_audit_entry_actor_id"), "audit_entry", ["actor_id"], unique=False)
        op.create_index(op.f("ix_audit_entry_target_type"), "audit_entry", ["target_type"], unique=False)


def downgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        op.drop_index(op.f("ix_audit_entry_target_type"), table_name="audit_entry")
        op.drop_index(op.f("ix_audit_entry_actor_id"), table_name="audit_entry")
        op.drop_index(op.f("ix_audit_entry_action"), table_name="audit_entry")
        op.drop_index("ix_audit_entry_at", table_name="audit_entry")
        op.drop_index("ix_audit_entry_org_at", table_name="audit_entry")
        op.drop_table("audit_entry")
