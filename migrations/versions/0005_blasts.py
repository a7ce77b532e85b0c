"""blasts and their audience (blast_recipient); one message per contact of a blast

Revision ID: 0005_blasts
Revises: 0004_inbound_and_receipts
Create Date: 2026-12-01 13:00:00.000000

A blast snapshots its audience into ``blast_recipient`` when it is accepted; the workers fan it out
into messages in batches (docs/decisions/0022-blast-fan-out.md). ``message.blast_id`` gets a unique
index with ``contact_id`` (a retried fan-out batch never creates a second message) and an index
with ``state`` (progress and completion), replacing the plain index on ``blast_id``.
"""

import warnings

import sqlalchemy as sa
from alembic import op
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB

__all__ = ("downgrade", "upgrade")

# revision identifiers, used by Alembic.
revision = "0005_blasts"
down_revision = "0004_inbound_and_receipts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        op.create_table(
            "blast",
            sa.Column("id", GUID(length=16), nullable=False),
            sa.Column("organization_id", GUID(length=16), nullable=False),
            sa.Column("name", sa.String(length=200), nullable=False),
            sa.Column("content", sa.Text(), nullable=False),
            sa.Column("servicechain_id", GUID(length=16), nullable=True),
            sa.Column("route", JsonB, nullable=False),
            sa.Column(
                "state",
                sa.Enum(
                    "scheduled",
                    "fanning_out",
                    "sending",
                    "completed",
                    "cancelled",
                    name="blaststate",
                    native_enum=False,
                    length=16,
                ),
                nullable=False,
            ),
            sa.Column("send_at", DateTimeUTC(timezone=True), nullable=True),
            sa.Column("audience", sa.Integer(), nullable=False),
            sa.Column("skipped_opted_out", sa.Integer(), nullable=False),
            sa.Column("fanned_out", sa.Integer(), nullable=False),
            sa.Column("cursor", GUID(length=16), nullable=True),
            sa.Column("credits_held", sa.Integer(), nullable=False),
            sa.Column("generation", sa.Integer(), nullable=False),
            sa.Column("started_at", DateTimeUTC(timezone=True), nullable=True),
            sa.Column("completed_at", DateTimeUTC(timezone=True), nullable=True),
            sa.Column("created_by", GUID(length=16), nullable=True),
            sa.Column("idempotency_key", sa.String(length=255), nullable=True),
            sa.Column("request_hash", sa.String(length=64), nullable=True),
            sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
            sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
            sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(
                ["organization_id"],
                ["organization.id"],
                name=op.f("fk_blast_organization_id_organization"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["servicechain_id"],
                ["servicechain.id"],
                name=op.f("fk_blast_servicechain_id_servicechain"),
                ondelete="SET NULL",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_blast")),
            sa.UniqueConstraint("organization_id", "idempotency_key", name="uq_blast_idempotency_key"),
        )
        op.create_index(op.f("ix_blast_organization_id"), "blast", ["organization_id"], unique=False)
        op.create_index(op.f("ix_blast_state"), "blast", ["state"], unique=False)
        op.create_table(
            "blast_recipient",
            sa.Column("blast_id", GUID(length=16), nullable=False),
            sa.Column("contact_id", GUID(length=16), nullable=False),
            sa.ForeignKeyConstraint(
                ["blast_id"], ["blast.id"], name=op.f("fk_blast_recipient_blast_id_blast"), ondelete="CASCADE"
            ),
            sa.ForeignKeyConstraint(
                ["contact_id"], ["contact.id"], name=op.f("fk_blast_recipient_contact_id_contact"), ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("blast_id", "contact_id", name=op.f("pk_blast_recipient")),
        )
        op.drop_index("ix_message_blast_id", table_name="message")
        op.create_index("ix_message_blast_state", "message", ["blast_id", "state"], unique=False)
        op.create_index("uq_message_blast_contact", "message", ["blast_id", "contact_id"], unique=True)


def downgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        op.drop_index("uq_message_blast_contact", table_name="message")
        op.drop_index("ix_message_blast_state", table_name="message")
        op.create_index("ix_message_blast_id", "message", ["blast_id"], unique=False)
        op.drop_table("blast_recipient")
        op.drop_index(op.f("ix_blast_state"), table_name="blast")
        op.drop_index(op.f("ix_blast_organization_id"), table_name="blast")
        op.drop_table("blast")
