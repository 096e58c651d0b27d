"""Every table model, in one place where Alembic's ``env.py`` sees them all.

The first three are the shared ISPmail schema: table and column names, types and
lengths are the contract Postfix and Dovecot read (docs/contract.md), and they
stay exactly as the guide made them. Everything mailprov needs for itself lives
in ``mailprov_*`` tables beside them, which Postfix and Dovecot never need.
A test (tests/test_schema_models.py) holds the migrated schema equal to these.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

# ---------------------------------------------------------------- the ISPmail tables


class Domain(SQLModel, table=True):
    __tablename__ = "virtual_domains"
    __table_args__ = (Index("uq_virtual_domains_name", "name", unique=True),)

    id: int | None = SQLField(default=None, sa_column=Column(Integer, primary_key=True))
    name: str = SQLField(sa_column=Column(String(50), nullable=False))


class Mailbox(SQLModel, table=True):
    __tablename__ = "virtual_users"
    __table_args__ = (
        UniqueConstraint("email", name="email"),
        Index("ix_virtual_users_domain_id_email", "domain_id", "email"),
    )

    id: int | None = SQLField(default=None, sa_column=Column(Integer, primary_key=True))
    domain_id: int = SQLField(
        sa_column=Column(
            Integer, ForeignKey("virtual_domains.id", ondelete="CASCADE"), nullable=False
        )
    )
    email: str = SQLField(sa_column=Column(String(100), nullable=False))
    password: str = SQLField(sa_column=Column(String(150), nullable=False))
    quota: int = SQLField(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0"))
    )


class AliasRow(SQLModel, table=True):
    """One destination of an alias; an alias is all rows with the same ``source``."""

    __tablename__ = "virtual_aliases"
    __table_args__ = (
        Index("uq_virtual_aliases_source_destination", "source", "destination", unique=True),
        Index("ix_virtual_aliases_domain_id_source", "domain_id", "source"),
        Index("ix_virtual_aliases_destination", "destination"),
    )

    id: int | None = SQLField(default=None, sa_column=Column(Integer, primary_key=True))
    domain_id: int = SQLField(
        sa_column=Column(
            Integer, ForeignKey("virtual_domains.id", ondelete="CASCADE"), nullable=False
        )
    )
    source: str = SQLField(sa_column=Column(String(100), nullable=False))
    destination: str = SQLField(sa_column=Column(String(100), nullable=False))


# ---------------------------------------------------------------- mailprov's own


class Lock(SQLModel, table=True):
    """Rows written to serialise changes that must see each other (app/crud/common.py)."""

    __tablename__ = "mailprov_locks"

    name: str = SQLField(sa_column=Column(String(64), primary_key=True))
    # Bumped by every holder: a written row is what a Galera cluster certifies.
    generation: int = SQLField(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default=text("0"))
    )


ALIAS_GRAPH_LOCK = "alias-graph"


class ApiKey(SQLModel, table=True):
    __tablename__ = "mailprov_api_keys"

    id: int | None = SQLField(default=None, sa_column=Column(Integer, primary_key=True))
    key_id: str = SQLField(sa_column=Column(String(16), nullable=False, unique=True))
    name: str = SQLField(sa_column=Column(String(100), nullable=False))
    secret_hash: str = SQLField(sa_column=Column(String(64), nullable=False))
    admin: bool = SQLField(sa_column=Column(Boolean, nullable=False))
    read_only: bool = SQLField(sa_column=Column(Boolean, nullable=False))
    domains: list[str] = SQLField(sa_column=Column(JSON, nullable=False))
    send_as: list[str] = SQLField(sa_column=Column(JSON, nullable=False))
    created_at: datetime = SQLField(sa_column=Column(DateTime, nullable=False))
    expires_at: datetime | None = SQLField(default=None, sa_column=Column(DateTime))
    last_used_at: datetime | None = SQLField(default=None, sa_column=Column(DateTime))
    revoked_at: datetime | None = SQLField(default=None, sa_column=Column(DateTime))


class AuthFailure(SQLModel, table=True):
    """Failed keys per client address (app.auth), shared by every running copy."""

    __tablename__ = "mailprov_auth_failures"

    client: str = SQLField(sa_column=Column(String(64), primary_key=True))
    window_start: datetime = SQLField(sa_column=Column(DateTime, nullable=False))
    failures: int = SQLField(sa_column=Column(Integer, nullable=False))
    blocked_until: datetime | None = SQLField(default=None, sa_column=Column(DateTime))


class AuditEntry(SQLModel, table=True):
    __tablename__ = "mailprov_audit"
    __table_args__ = (
        Index("ix_mailprov_audit_at", "at"),
        Index("ix_mailprov_audit_key_id", "key_id"),
        Index("ix_mailprov_audit_target", "target"),
    )

    id: int | None = SQLField(default=None, sa_column=Column(Integer, primary_key=True))
    at: datetime = SQLField(sa_column=Column(DateTime, nullable=False))
    key_id: str | None = SQLField(default=None, sa_column=Column(String(16)))
    key_name: str | None = SQLField(default=None, sa_column=Column(String(100)))
    action: str = SQLField(sa_column=Column(String(64), nullable=False))
    target: str | None = SQLField(default=None, sa_column=Column(String(255)))
    outcome: str = SQLField(sa_column=Column(String(64), nullable=False))
    status: int = SQLField(sa_column=Column(Integer, nullable=False))
    client: str | None = SQLField(default=None, sa_column=Column(String(64)))


class IdempotencyRecord(SQLModel, table=True):
    """An Idempotency-Key of /send and the answer it gave (app.idempotency)."""

    __tablename__ = "mailprov_idempotency"
    __table_args__ = (UniqueConstraint("key_id", "idem_key", name="uq_mailprov_idempotency"),)

    id: int | None = SQLField(default=None, sa_column=Column(Integer, primary_key=True))
    key_id: str = SQLField(sa_column=Column(String(16), nullable=False))
    idem_key: str = SQLField(sa_column=Column(String(255), nullable=False))
    request_hash: str = SQLField(sa_column=Column(String(64), nullable=False))
    state: str = SQLField(sa_column=Column(String(16), nullable=False))
    status: int | None = SQLField(default=None, sa_column=Column(Integer))
    response: dict[str, Any] | None = SQLField(default=None, sa_column=Column(JSON))
    created_at: datetime = SQLField(sa_column=Column(DateTime, nullable=False))


class SendRate(SQLModel, table=True):
    """One key's /send rate state (app.ratelimit, GCRA)."""

    __tablename__ = "mailprov_send_rate"

    key_id: str = SQLField(sa_column=Column(String(16), primary_key=True))
    # Microseconds since the epoch: exact on every backend (MariaDB's DATETIME drops them).
    tat: int = SQLField(sa_column=Column(BigInteger, nullable=False))


class DkimKey(SQLModel, table=True):
    """A domain's DKIM key (app.dkim): the private half sealed, the public half as published.

    ``state``: ``pending`` (published, not signing yet), ``active`` (published and
    signing; at most one a domain) or ``retired`` (published until deleted, so mail
    signed with it still verifies). ``mailprov dkim sync`` writes what rspamd reads."""

    __tablename__ = "mailprov_dkim_keys"
    __table_args__ = (
        UniqueConstraint("domain_id", "selector", name="uq_mailprov_dkim_keys_domain_selector"),
    )

    id: int | None = SQLField(default=None, sa_column=Column(Integer, primary_key=True))
    domain_id: int = SQLField(
        sa_column=Column(
            Integer, ForeignKey("virtual_domains.id", ondelete="CASCADE"), nullable=False
        )
    )
    selector: str = SQLField(sa_column=Column(String(63), nullable=False))
    algorithm: str = SQLField(sa_column=Column(String(16), nullable=False))
    bits: int = SQLField(sa_column=Column(Integer, nullable=False))
    # The p= value of the TXT record: base64 of the public key (DER, or raw Ed25519).
    public_key: str = SQLField(sa_column=Column(Text, nullable=False))
    # "aesgcm:..." (encrypted with MAILPROV_DKIM_KEY_SECRET) or "plain:..." (app.dkim).
    private_key: str = SQLField(sa_column=Column(Text, nullable=False))
    state: str = SQLField(sa_column=Column(String(16), nullable=False))
    created_at: datetime = SQLField(sa_column=Column(DateTime, nullable=False))
    activated_at: datetime | None = SQLField(default=None, sa_column=Column(DateTime))
    retired_at: datetime | None = SQLField(default=None, sa_column=Column(DateTime))
