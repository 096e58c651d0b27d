"""API keys: their models and operations (the table is ``app.tables.ApiKey``).

A key reads ``mpk_<key id>_<secret>``. The key id (64 bits, public) finds the
row; the secret (256 bits) is stored only as its SHA-256, which is enough for
a random secret of that size, and is compared in constant time. The key is
shown once, when it is created.
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, Field, model_validator
from sqlalchemy import func
from sqlmodel import Session, select

from app.addresses import normalize_alias_source, normalize_domain
from app.clock import aware, naive_utc, utcnow
from app.crud.common import page_slice
from app.db import retried
from app.models import RAW_MAX, Input, Page, example
from app.pagination import PageParams
from app.tables import ApiKey

KEY_PATTERN = re.compile(r"mpk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what the key allows."""

    key_id: str
    name: str
    admin: bool
    read_only: bool
    domains: frozenset[str]
    send_as: tuple[str, ...]

    @property
    def scope(self) -> frozenset[str] | None:
        """The domains this key sees; None for all of them."""
        return None if self.admin else self.domains

    def sees(self, domain: str) -> bool:
        return self.admin or domain in self.domains


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


# A stand-in compared against when no row matches, so a miss costs what a hit costs.
_DUMMY_HASH = _hash_secret("x" * 43)


# ---------------------------------------------------------------- API models


Scope = Annotated[str, Field(max_length=RAW_MAX), AfterValidator(normalize_domain)]
SenderPattern = Annotated[str, Field(max_length=RAW_MAX), AfterValidator(normalize_alias_source)]


class KeyCreate(Input):
    model_config = example(
        {"name": "ops", "admin": True},
        {"name": "example.org helpdesk", "domains": ["example.org"],
         "send_as": ["@example.org"], "expires_at": "2027-12-31T23:59:59Z"},
    )  # fmt: skip

    name: str = Field(min_length=1, max_length=100, examples=["ops"])
    admin: bool = Field(
        default=False, strict=True, description="Everything, including key management."
    )
    domains: list[Scope] = Field(
        default_factory=list,
        max_length=1000,
        description="Domains whose mailboxes and aliases the key manages (not for admin keys).",
        examples=[["example.org"]],
    )
    read_only: bool = Field(default=False, strict=True, description="Only GET requests.")
    send_as: list[SenderPattern] = Field(
        default_factory=list,
        max_length=1000,
        description="Addresses or @domain patterns the key may use as From in /send.",
        examples=[["@example.org", "noreply@example.net"]],
    )
    expires_at: datetime | None = Field(
        default=None,
        strict=True,  # an ISO 8601 string, not a number of seconds
        description="When the key stops working (ISO 8601; UTC if no zone is given).",
    )

    @model_validator(mode="after")
    def _admin_or_domains(self) -> Self:
        if self.admin and self.domains:
            raise ValueError("an admin key sees every domain: leave domains empty")
        self.domains = list(dict.fromkeys(self.domains))
        self.send_as = list(dict.fromkeys(self.send_as))
        return self


KEY_EXAMPLE: dict[str, object] = {
    "id": "3f9a61c2d4e5b807", "name": "example.org helpdesk", "admin": False,
    "read_only": False, "domains": ["example.org"], "send_as": ["@example.org"],
    "created_at": "2026-11-24T10:00:00Z", "expires_at": None,
    "last_used_at": "2026-11-24T10:05:00Z", "revoked_at": None,
}  # fmt: skip


class KeyPublic(BaseModel):
    model_config = example(KEY_EXAMPLE)

    id: str = Field(description="The key's public id, also its URL: /keys/{id}.")
    name: str
    admin: bool
    read_only: bool
    domains: list[str]
    send_as: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    model_config = example({**KEY_EXAMPLE, "key": "mpk_3f9a61c2d4e5b807_" + "Q" * 43})

    key: str = Field(description="The key itself. Shown this once; only its hash is stored.")


class KeysPage(Page):
    model_config = example({"total": 1, "limit": 50, "next_cursor": None, "items": [KEY_EXAMPLE]})

    items: list[KeyPublic]


def key_public(row: ApiKey) -> KeyPublic:
    return KeyPublic(
        id=row.key_id,
        name=row.name,
        admin=row.admin,
        read_only=row.read_only,
        domains=list(row.domains),
        send_as=list(row.send_as),
        created_at=aware(row.created_at) or row.created_at,
        expires_at=aware(row.expires_at),
        last_used_at=aware(row.last_used_at),
        revoked_at=aware(row.revoked_at),
    )


# ---------------------------------------------------------------- operations


def new_key_id() -> str:
    """A key's public id: chosen before the key is made, so the caller can name it
    (on the audit trail) in the transaction that creates it."""
    return secrets.token_hex(8)


@retried
def create_key(session: Session, spec: KeyCreate, key_id: str) -> KeyCreated:
    """Make the key and commit; the answer is the only time its secret is seen."""
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        key_id=key_id,
        name=spec.name,
        secret_hash=_hash_secret(secret),
        admin=spec.admin,
        read_only=spec.read_only,
        domains=spec.domains,
        send_as=spec.send_as,
        created_at=utcnow(),
        expires_at=naive_utc(spec.expires_at),
    )
    session.add(row)
    session.commit()
    return KeyCreated(**key_public(row).model_dump(), key=f"mpk_{key_id}_{secret}")


class KeyRejected(Exception):
    """Why a presented key does not authenticate (never shown to the caller)."""


def verify_key(session: Session, presented: str, now: datetime) -> ApiKey:
    match = KEY_PATTERN.fullmatch(presented)
    if not match:
        raise KeyRejected("malformed")
    key_id, secret = match.groups()
    row = session.exec(select(ApiKey).where(ApiKey.key_id == key_id)).first()
    expected = row.secret_hash if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(_hash_secret(secret), expected) or row is None:
        raise KeyRejected("unknown")
    if row.revoked_at is not None:
        raise KeyRejected("revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise KeyRejected("expired")
    return row


def principal_of(row: ApiKey) -> Principal:
    return Principal(
        key_id=row.key_id,
        name=row.name,
        admin=row.admin,
        read_only=row.read_only,
        domains=frozenset(row.domains),
        send_as=tuple(row.send_as),
    )


def find_key(session: Session, key_id: str) -> ApiKey | None:
    return session.exec(select(ApiKey).where(ApiKey.key_id == key_id)).first()


def list_keys(session: Session, page: PageParams) -> tuple[list[KeyPublic], int | None, str | None]:
    total = page.total(session, select(func.count()).select_from(ApiKey))
    query = select(ApiKey)
    if page.after is not None:
        query = query.where(ApiKey.key_id > page.after)
    rows = session.exec(query.order_by(ApiKey.key_id).limit(page.limit + 1)).all()
    shown, cursor = page_slice([row.key_id for row in rows], page)
    return [key_public(row) for row in rows[:shown]], total, cursor


@retried
def revoke_key(session: Session, row: ApiKey) -> ApiKey:
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.commit()
    return row


def describe(row: ApiKey) -> dict[str, Any]:
    """What the CLI prints about a key: everything but the secret's hash."""
    return key_public(row).model_dump(mode="json")
