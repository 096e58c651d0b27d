"""mailprov's guards beside the contract: uniqueness, lookup indexes, a lock table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Unique names and (source, destination) pairs let the database, not a race,
decide which of two concurrent creates wins. The indexes serve Postfix's alias
lookup (by source) and mailprov's lists. Nothing here changes a row of the
ISPmail tables: a database with duplicates is refused with a list of them.
"""

import sqlalchemy as sa
from alembic import op

from app.migrate import MigrationRefused

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None


def _refuse_duplicates(table: str, columns: str) -> None:
    rows = (
        op.get_bind()
        .execute(
            sa.text(
                f"SELECT {columns}, COUNT(*) FROM {table} GROUP BY {columns} HAVING COUNT(*) > 1"
            )
        )
        .fetchmany(20)
    )
    if rows:
        listed = "; ".join(", ".join(str(v) for v in row[:-1]) for row in rows)
        raise MigrationRefused(
            f"{table} has duplicate ({columns}) rows: {listed}. "
            "Remove the duplicates by hand, then migrate again; no row was changed."
        )


def upgrade() -> None:
    _refuse_duplicates("virtual_domains", "name")
    _refuse_duplicates("virtual_aliases", "source, destination")
    op.create_index("uq_virtual_domains_name", "virtual_domains", ["name"], unique=True)
    op.create_index(
        "uq_virtual_aliases_source_destination",
        "virtual_aliases",
        ["source", "destination"],
        unique=True,
    )
    op.create_index("ix_virtual_users_domain_id_email", "virtual_users", ["domain_id", "email"])
    op.create_index(
        "ix_virtual_aliases_domain_id_source", "virtual_aliases", ["domain_id", "source"]
    )
    op.create_index("ix_virtual_aliases_destination", "virtual_aliases", ["destination"])
    locks = op.create_table(
        "mailprov_locks",
        sa.Column("name", sa.String(64), primary_key=True),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.bulk_insert(locks, [{"name": "alias-graph"}])


def downgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        # InnoDB dropped its implicit domain_id indexes when the composite ones below
        # took over the foreign keys; give the keys theirs back before dropping those.
        op.create_index("domain_id", "virtual_users", ["domain_id"])
        op.create_index("domain_id", "virtual_aliases", ["domain_id"])
    op.drop_table("mailprov_locks")
    op.drop_index("ix_virtual_aliases_destination", "virtual_aliases")
    op.drop_index("ix_virtual_aliases_domain_id_source", "virtual_aliases")
    op.drop_index("ix_virtual_users_domain_id_email", "virtual_users")
    op.drop_index("uq_virtual_aliases_source_destination", "virtual_aliases")
    op.drop_index("uq_virtual_domains_name", "virtual_domains")
