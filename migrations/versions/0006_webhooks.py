"""outbound status webhooks: endpoints, the event outbox, deliveries and their attempts

Revision ID: 0006_webhooks
Revises: 0005_blasts
Create Date: 2026-12-01 13:20:00.000000
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op
from sqlalchemy.dialects import postgresql

__all__ = ("downgrade", "upgrade")

revision = "0006_webhooks"
down_revision = "0005_blasts"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _base(table: str) -> list:
    return [
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("organization_id", GUID(length=16), nullable=False),
    ]


def _tail(table: str) -> list:
    return [
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organization.id"],
            name=op.f(f"fk_{table}_organization_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def upgrade() -> None:
    op.create_table(
        "webhook_endpoint",
        *_base("webhook_endpoint"),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("event_types", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("previous_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("previous_secret_expires_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("disabled_reason", sa.String(length=500), nullable=True),
        sa.Column("last_success_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("failing_since", DateTimeUTC(timezone=True), nullable=True),
        *_tail("webhook_endpoint"),
    )
    op.create_index(op.f("ix_webhook_endpoint_organization_id"), "webhook_endpoint", ["organization_id"])

    op.create_table(
        "webhook_event",
        *_base("webhook_event"),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("dispatched_at", DateTimeUTC(timezone=True), nullable=True),
        *_tail("webhook_event"),
    )
    op.create_index(op.f("ix_webhook_event_organization_id"), "webhook_event", ["organization_id"])
    op.create_index("ix_webhook_event_undispatched", "webhook_event", ["dispatched_at", "created_at"])

    op.create_table(
        "webhook_delivery",
        *_base("webhook_delivery"),
        sa.Column("event_id", GUID(length=16), nullable=False),
        sa.Column("endpoint_id", GUID(length=16), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum("pending", "delivered", "failed", "given_up", name="deliverystatus", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", DateTimeUTC(timezone=True), nullable=True),
        *_tail("webhook_delivery"),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["webhook_event.id"],
            name=op.f("fk_webhook_delivery_event_id_webhook_event"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoint.id"],
            name=op.f("fk_webhook_delivery_endpoint_id_webhook_endpoint"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_delivery_event_endpoint"),
    )
    op.create_index(op.f("ix_webhook_delivery_organization_id"), "webhook_delivery", ["organization_id"])
    op.create_index(op.f("ix_webhook_delivery_next_attempt_at"), "webhook_delivery", ["next_attempt_at"])
    op.create_index("ix_webhook_delivery_endpoint_created", "webhook_delivery", ["endpoint_id", "created_at"])

    op.create_table(
        "webhook_attempt",
        *_base("webhook_attempt"),
        sa.Column("delivery_id", GUID(length=16), nullable=False),
        sa.Column("attempted_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("error", sa.String(length=1000), nullable=True),
        *_tail("webhook_attempt"),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_delivery.id"],
            name=op.f("fk_webhook_attempt_delivery_id_webhook_delivery"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(op.f("ix_webhook_attempt_organization_id"), "webhook_attempt", ["organization_id"])
    op.create_index(op.f("ix_webhook_attempt_delivery_id"), "webhook_attempt", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("webhook_attempt")
    op.drop_table("webhook_delivery")
    op.drop_table("webhook_event")
    op.drop_table("webhook_endpoint")
