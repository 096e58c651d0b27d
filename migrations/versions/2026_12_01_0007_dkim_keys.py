"""mailprov's own table of DKIM keys per domain.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Postfix and Dovecot never read it; `mailprov dkim sync` turns it into the key
files and selector map rspamd reads.
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailprov_dkim_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "domain_id",
            sa.Integer,
            sa.ForeignKey("virtual_domains.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("selector", sa.String(63), nullable=False),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("bits", sa.Integer, nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("private_key", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("activated_at", sa.DateTime),
        sa.Column("retired_at", sa.DateTime),
        sa.UniqueConstraint("domain_id", "selector", name="uq_mailprov_dkim_keys_domain_selector"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("mailprov_dkim_keys")
