"""mailprov's own tables for API keys, failed-authentication counts and the audit trail.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

Postfix and Dovecot never read these tables.
"""

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None

MYSQL = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "mailprov_api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(16), nullable=False, unique=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("read_only", sa.Boolean, nullable=False),
        sa.Column("domains", sa.JSON, nullable=False),
        sa.Column("send_as", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime),
        sa.Column("last_used_at", sa.DateTime),
        sa.Column("revoked_at", sa.DateTime),
        **MYSQL,
    )
    op.create_table(
        "mailprov_auth_failures",
        sa.Column("client", sa.String(64), primary_key=True),
        sa.Column("window_start", sa.DateTime, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("blocked_until", sa.DateTime),
        **MYSQL,
    )
    op.create_table(
        "mailprov_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("key_id", sa.String(16)),
        sa.Column("key_name", sa.String(100)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255)),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("client", sa.String(64)),
        **MYSQL,
    )
    op.create_index("ix_mailprov_audit_at", "mailprov_audit", ["at"])
    op.create_index("ix_mailprov_audit_key_id", "mailprov_audit", ["key_id"])
    op.create_index("ix_mailprov_audit_target", "mailprov_audit", ["target"])


def downgrade() -> None:
    op.drop_table("mailprov_audit")
    op.drop_table("mailprov_auth_failures")
    op.drop_table("mailprov_api_keys")
