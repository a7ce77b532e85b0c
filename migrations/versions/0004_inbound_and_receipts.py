"""inbound messages stored once per provider id; receipts find attempts by provider id

Revision ID: 0004_inbound_and_receipts
Revises: 0003_web_sessions
Create Date: 2026-12-01 12:40:00.000000

A provider that retries an inbound message (same provider id) must not store it twice: a unique
index on (organization, service, provider id) over incoming messages only. Receipts look the
attempt up by (organization, service, provider id).
"""

import sqlalchemy as sa
from alembic import op

__all__ = ("downgrade", "upgrade")

# revision identifiers, used by Alembic.
revision = "0004_inbound_and_receipts"
down_revision = "0003_web_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "uq_message_incoming_provider_id",
        "message",
        ["organization_id", "service", "provider_message_id"],
        unique=True,
        sqlite_where=sa.text("direction = 'incoming'"),
        postgresql_where=sa.text("direction = 'incoming'"),
    )
    op.create_index(
        "ix_message_attempt_provider_id",
        "message_attempt",
        ["organization_id", "service", "provider_message_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_message_attempt_provider_id", table_name="message_attempt")
    op.drop_index("uq_message_incoming_provider_id", table_name="message")
