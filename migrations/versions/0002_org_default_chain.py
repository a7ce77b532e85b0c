"""organization default servicechain

Revision ID: 0002_org_default_chain
Revises: 3b67195e418f

``organization.default_servicechain_id``: the chain a message uses when neither the request nor the
contact names one. ``servicechain`` already references ``organization``, so the new foreign key closes
a cycle (``use_alter`` in the model).

On SQLite, batch mode copies ``organization`` to a new table and drops the old one. Every connection
runs with ``PRAGMA foreign_keys=ON``, and with it on, SQLite's DROP TABLE first deletes the rows —
cascading into every tenant table (users, contacts, chains, messages…). So the copy runs with foreign
keys off, as SQLite's own recipe for schema changes says, is checked with ``PRAGMA foreign_key_check``,
and is refused outright when they cannot be turned off. See
docs/decisions/0012-organization-default-servicechain.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from advanced_alchemy.types import GUID
from alembic import op

# revision identifiers, used by Alembic.
revision = "0002_org_default_chain"
down_revision = "3b67195e418f"
branch_labels = None
depends_on = None

TABLE = "organization"
COLUMN = "default_servicechain_id"
FK = "fk_organization_default_servicechain_id_servicechain"


@contextmanager
def _table_copy_is_safe() -> Iterator[None]:
    """On SQLite, foreign key enforcement off while ``organization`` is copied; elsewhere nothing."""
    if op.get_bind().dialect.name != "sqlite":
        yield
        return
    context = op.get_context()
    with context.autocommit_block():  # the pragma is a no-op inside a transaction
        op.execute("PRAGMA foreign_keys=OFF")
    try:
        if op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar():
            raise RuntimeError(
                "SQLite foreign keys could not be turned off; copying the organization table with them on "
                "would delete every organization's data, so the migration stops here and changes nothing."
            )
        yield
        broken = op.get_bind().exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the organization table copy left dangling references: {broken[:5]}")
    finally:
        with context.autocommit_block():
            op.execute("PRAGMA foreign_keys=ON")


def _batch() -> Any:
    # SQLite reflects the BINARY(16) of a GUID as NUMERIC: name the real type for the copy
    return op.batch_alter_table(TABLE, schema=None, reflect_args=[sa.Column("id", GUID(length=16), primary_key=True)])


def upgrade() -> None:
    with _table_copy_is_safe(), _batch() as batch_op:
        batch_op.add_column(sa.Column(COLUMN, GUID(length=16), nullable=True))
        batch_op.create_foreign_key(FK, "servicechain", [COLUMN], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with _table_copy_is_safe(), _batch() as batch_op:
        batch_op.drop_constraint(FK, type_="foreignkey")
        batch_op.drop_column(COLUMN)
