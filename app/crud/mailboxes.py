"""Rules for mailboxes (virtual_users)."""

from sqlalchemy import ColumnElement, func
from sqlmodel import Session, col, select

from app import errors
from app.addresses import domain_of
from app.crud.common import (
    commit_or_conflict,
    domain_range,
    in_scope,
    lock_alias_graph,
    mailbox_exists,
    maildir,
    of_domain,
    page_slice,
    prune_dangling,
    require_hosted,
)
from app.db import retried
from app.models import AliasDestination, MailboxDeleted, MailboxPublic
from app.pagination import PageParams
from app.tables import AliasRow, Mailbox


def _mailbox_public(row: Mailbox, maildir_root: str) -> MailboxPublic:
    return MailboxPublic(
        address=row.email,
        domain=domain_of(row.email),
        quota=row.quota,
        maildir=maildir(maildir_root, row.email),
    )


def _get_mailbox(session: Session, address: str) -> Mailbox:
    row = session.exec(select(Mailbox).where(Mailbox.email == address)).first()
    if row is None:
        raise errors.MailboxNotFound(f"{address} is not a mailbox here")
    return row


@retried
def create_mailbox(
    session: Session, address: str, stored_hash: str, quota: int, maildir_root: str
) -> MailboxPublic:
    domain_id = require_hosted(session, address, "address")
    exists = errors.MailboxExists(f"{address} already exists", field="address")
    if mailbox_exists(session, address):
        raise exists
    row = Mailbox(domain_id=domain_id, email=address, password=stored_hash, quota=quota)
    session.add(row)
    commit_or_conflict(session, exists)
    return _mailbox_public(row, maildir_root)


def list_mailboxes(
    session: Session,
    page: PageParams,
    maildir_root: str,
    domain: str | None = None,
    q: str | None = None,
    scope: frozenset[str] | None = None,
) -> tuple[list[MailboxPublic], int | None, str | None]:
    conditions: list[ColumnElement[bool]] = []
    if scope is not None:
        conditions.append(in_scope(col(Mailbox.domain_id), scope))
    if domain is not None:
        conditions.append(of_domain(session, col(Mailbox.domain_id), domain))
    if q:
        conditions.append(col(Mailbox.email).contains(q.lower(), autoescape=True))
    total = page.total(session, select(func.count()).select_from(Mailbox).where(*conditions))
    query = select(Mailbox).where(*conditions)
    if domain is not None:
        query = domain_range(query, Mailbox, "ix_virtual_users_domain_id_email")
    if page.after is not None:
        query = query.where(Mailbox.email > page.after)
    rows = session.exec(query.order_by(Mailbox.email).limit(page.limit + 1)).all()
    shown, cursor = page_slice([r.email for r in rows], page)
    return [_mailbox_public(r, maildir_root) for r in rows[:shown]], total, cursor


def read_mailbox(session: Session, address: str, maildir_root: str) -> MailboxPublic:
    return _mailbox_public(_get_mailbox(session, address), maildir_root)


@retried
def update_mailbox(
    session: Session,
    address: str,
    stored_hash: str | None,
    quota: int | None,
    maildir_root: str,
) -> MailboxPublic:
    row = _get_mailbox(session, address)
    if stored_hash is not None:
        row.password = stored_hash
    if quota is not None:
        row.quota = quota
    session.add(row)
    session.commit()
    return _mailbox_public(row, maildir_root)


@retried
def delete_mailbox(
    session: Session,
    address: str,
    cascade: bool,
    maildir_root: str,
    scope: frozenset[str] | None = None,
) -> MailboxDeleted:
    lock_alias_graph(session)
    row = _get_mailbox(session, address)
    # "Keep a copy" rows (address -> itself) turn into a loop once the mailbox is gone.
    self_rows = session.exec(
        select(AliasRow).where(AliasRow.source == address, AliasRow.destination == address)
    ).all()
    if self_rows and not cascade:
        raise errors.StillReferenced(
            f"still a destination of: {address} (its own alias keeps a copy here); "
            "remove it there first, or repeat with cascade=true"
        )
    removed = [AliasDestination(source=address, destination=address) for _ in self_rows]
    for self_row in self_rows:
        session.delete(self_row)
    session.delete(row)
    session.flush()
    removed += prune_dangling(session, {address}, refuse=not cascade, scope=scope)
    session.commit()
    return MailboxDeleted(
        address=address,
        maildir_kept=maildir(maildir_root, address),
        alias_destinations_removed=removed,
    )
