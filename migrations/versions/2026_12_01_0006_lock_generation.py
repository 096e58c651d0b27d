"""mailprov_locks.generation: the alias-graph lock is written, not only selected.

A row that is only selected FOR UPDATE locks one server; a MariaDB Galera cluster
replicates and certifies writes only. Every holder now bumps ``generation``, so two
nodes that take the lock at once conflict at certification (docs/high-availability.md).
No row of the ISPmail tables changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "mailprov_locks",
        sa.Column("generation", sa.BigInteger, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("mailprov_locks", "generation")
