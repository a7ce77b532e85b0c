"""server-side browser sessions (web_session); user_account.session_version is gone

Revision ID: 0003_web_sessions
Revises: 0002_org_default_chain
Create Date: 2026-12-02 10:00:00.000000

Browser sessions used to live only in the signed cookie, ended on a password change by bumping
``user_account.session_version``. Each session is now a row, ended on the server (see
docs/decisions/0014-server-side-sessions.md). Everyone signs in again after this upgrade.
"""

import warnings

import sqlalchemy as sa
from alembic import op
from advanced_alchemy.types import GUID, DateTimeUTC

__all__ = ("downgrade", "upgrade")

# revision identifiers, used by Alembic.
revision = "0003_web_sessions"
down_revision = "0002_org_default_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        op.create_table(
            "web_session",
            sa.Column("id", GUID(length=16), nullable=False),
            sa.Column("token_hash", sa.String(length=64), nullable=False),
            sa.Column("user_id", GUID(length=16), nullable=False),
            sa.Column("expires_at", DateTimeUTC(timezone=True), nullable=False),
            sa.Column("last_seen_at", DateTimeUTC(timezone=True), nullable=False),
            sa.Column("revoked_at", DateTimeUTC(timezone=True), nullable=True),
            sa.Column("ip", sa.String(length=64), nullable=False),
            sa.Column("user_agent", sa.String(length=300), nullable=False),
            sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
            sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
            sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(
                ["user_id"],
                ["user_account.id"],
                name=op.f("fk_web_session_user_id_user_account"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_web_session")),
            sa.UniqueConstraint("token_hash", name=op.f("uq_web_session_token_hash")),
        )
        op.create_index(op.f("ix_web_session_user_id"), "web_session", ["user_id"], unique=False)
        # A plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35 has it): a batch "move and copy" of
        # user_account would drop the table, and with foreign keys on, cascade into every table
        # that references it.
        op.drop_column("user_account", "session_version")


def downgrade() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        op.add_column("user_account", sa.Column("session_version", sa.Integer(), nullable=False, server_default="1"))
        op.drop_index(op.f("ix_web_session_user_id"), table_name="web_session")
        op.drop_table("web_session")
