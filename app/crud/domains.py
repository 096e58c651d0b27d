"""Rules for domains (virtual_domains)."""

from pathlib import PurePosixPath

from sqlalchemy import ColumnElement, delete, func
from sqlmodel import Session, col, select

from app import errors
from app.addresses import unicode_domain
from app.crud.common import (
    commit_or_conflict,
    hosted_domain,
    lock_alias_graph,
    page_slice,
    prune_dangling,
    sources_of,
)
from app.db import retried
from app.models import AliasDestination, DomainDeleted, DomainDetail, DomainPublic
from app.pagination import PageParams
from app.tables import AliasRow, DkimKey, Domain, Mailbox


def _domain_public(name: str) -> DomainPublic:
    return DomainPublic(name=name, name_unicode=unicode_domain(name))


@retried
def create_domain(session: Session, name: str) -> DomainPublic:
    if hosted_domain(session, name) is not None:
        raise errors.DomainExists(f"{name} is already hosted", field="name")
    session.add(Domain(name=name))
    commit_or_conflict(session, errors.DomainExists(f"{name} is already hosted", field="name"))
    return _domain_public(name)


def list_domains(
    session: Session, page: PageParams, q: str | None, scope: frozenset[str] | None = None
) -> tuple[list[DomainPublic], int | None, str | None]:
    conditions: list[ColumnElement[bool]] = []
    if scope is not None:
        conditions.append(col(Domain.name).in_(scope))
    if q:
        conditions.append(col(Domain.name).contains(q.lower(), autoescape=True))
    total = page.total(session, select(func.count()).select_from(Domain).where(*conditions))
    query = select(Domain.name).where(*conditions)
    if page.after is not None:
        query = query.where(Domain.name > page.after)
    names = session.exec(query.order_by(Domain.name).limit(page.limit + 1)).all()
    shown, cursor = page_slice(names, page)
    return [_domain_public(n) for n in names[:shown]], total, cursor


def read_domain(session: Session, name: str, maildir_root: str) -> DomainDetail:
    domain = hosted_domain(session, name)
    if domain is None:
        raise errors.DomainNotFound(f"{name} is not hosted here")
    mailboxes = session.exec(
        select(func.count()).select_from(Mailbox).where(Mailbox.domain_id == domain.id)
    ).one()
    aliases = session.exec(
        select(func.count(func.distinct(AliasRow.source))).where(AliasRow.domain_id == domain.id)
    ).one()
    return DomainDetail(
        **_domain_public(name).model_dump(),
        mailboxes=mailboxes,
        aliases=aliases,
        maildir_root=str(PurePosixPath(maildir_root, name)),
    )


@retried
def delete_domain(session: Session, name: str, cascade: bool, maildir_root: str) -> DomainDeleted:
    lock_alias_graph(session)
    domain = hosted_domain(session, name)
    if domain is None:
        raise errors.DomainNotFound(f"{name} is not hosted here")
    detail = read_domain(session, name, maildir_root)
    suffix = "@" + name
    inbound = session.exec(
        select(AliasRow).where(
            col(AliasRow.destination).endswith(suffix, autoescape=True),
            AliasRow.domain_id != domain.id,
        )
    ).all()
    if not cascade and (detail.mailboxes or detail.aliases or inbound):
        raise errors.DomainNotEmpty(
            f"{name} has {detail.mailboxes} mailbox(es), {detail.aliases} alias(es) and "
            f"{len(inbound)} destination(s) in other domains' aliases; "
            "repeat with cascade=true to delete them all (maildirs stay on disk)"
        )
    removed = [AliasDestination(source=r.source, destination=r.destination) for r in inbound]
    for row in inbound:
        session.delete(row)
    # Explicit deletes rather than trusting ON DELETE CASCADE: an adopted database may lack it.
    session.exec(delete(AliasRow).where(col(AliasRow.domain_id) == domain.id))
    session.exec(delete(Mailbox).where(col(Mailbox.domain_id) == domain.id))
    # Its DKIM keys go with it, whatever cascade says: they sign for nothing else.
    session.exec(delete(DkimKey).where(col(DkimKey.domain_id) == domain.id))
    session.delete(domain)
    session.flush()
    removed += prune_dangling(session, sources_of(inbound))
    session.commit()
    return DomainDeleted(
        name=name,
        mailboxes_removed=detail.mailboxes,
        aliases_removed=detail.aliases,
        alias_destinations_removed=removed,
        maildirs_kept=detail.maildir_root,
    )
