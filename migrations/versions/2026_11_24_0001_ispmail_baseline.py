"""The ISPmail tables, exactly as the guide creates them.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

An existing database made from the guide's SQL is stamped at this revision
instead of running it (app/migrate.py).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from app.migrate import refuse_to_drop_rows

revision: str = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}
TABLES = ("virtual_aliases", "virtual_users", "virtual_domains")


def upgrade() -> None:
    op.create_table(
        "virtual_domains",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(50), nullable=False),
        **MYSQL,
    )
    op.create_table(
        "virtual_users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "domain_id",
            sa.Integer,
            sa.ForeignKey("virtual_domains.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("email", sa.String(100), nullable=False),
        sa.Column("password", sa.String(150), nullable=False),
        # bigint(11) as the guide writes it (display width only; same range).
        sa.Column(
            "quota",
            sa.BigInteger().with_variant(mysql.BIGINT(display_width=11), "mysql"),
            nullable=False,
            server_default=sa.text("0"),
        ),
        sa.UniqueConstraint("email", name="email"),
        **MYSQL,
    )
    op.create_table(
        "virtual_aliases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "domain_id",
            sa.Integer,
            sa.ForeignKey("virtual_domains.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("destination", sa.String(100), nullable=False),
        **MYSQL,
    )


def downgrade() -> None:
    refuse_to_drop_rows(op.get_bind())
    for table in TABLES:
        op.drop_table(table)
