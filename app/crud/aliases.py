"""Rules for aliases (virtual_aliases): one row per destination."""

from collections.abc import Iterable

from sqlalchemy import ColumnElement, delete, func
from sqlmodel import Session, col, select

from app import errors
from app.addresses import domain_of
from app.crud.common import (
    alias_sources,
    commit_or_conflict,
    domain_range,
    in_scope,
    lock_alias_graph,
    mailboxes_among,
    of_domain,
    page_slice,
    prune_dangling,
    require_hosted,
)
from app.db import retried
from app.models import AliasDeleted, AliasPublic
from app.pagination import PageParams
from app.tables import AliasRow, Domain


def _alias_public(source: str, destinations: Iterable[str]) -> AliasPublic:
    return AliasPublic(
        source=source,
        domain=domain_of(source),
        catch_all=source.startswith("@"),
        destinations=sorted(destinations),
    )


def _alias_rows(session: Session, source: str) -> list[AliasRow]:
    return list(session.exec(select(AliasRow).where(AliasRow.source == source)).all())


def _require_alias(session: Session, source: str) -> list[AliasRow]:
    rows = _alias_rows(session, source)
    if not rows:
        raise errors.AliasNotFound(f"{source} is not an alias here")
    return rows


def _check_destinations(
    session: Session,
    source: str,
    destinations: list[str],
    field: str,
    scope: frozenset[str] | None,
) -> None:
    """Local destinations must exist; no alias may reach itself again.

    A key limited to ``scope`` may deliver to its own domains and to domains not
    hosted here, not into other hosted domains (that are another tenant's)."""
    hosted = set(
        session.exec(
            select(Domain.name).where(col(Domain.name).in_({domain_of(d) for d in destinations}))
        ).all()
    )
    if scope is not None:
        for destination in destinations:
            if domain_of(destination) in hosted and domain_of(destination) not in scope:
                raise errors.Forbidden(
                    f"{domain_of(destination)} is hosted here but outside this key's domains",
                    field=field,
                )
    local = [d for d in destinations if domain_of(d) in hosted]
    mailboxes = mailboxes_among(session, local)
    aliases = alias_sources(session, local)
    for destination in local:
        if destination == source:
            if destination not in mailboxes:
                raise errors.AliasLoop(
                    f"{source} would deliver to itself; that only makes sense when it is also "
                    "a mailbox (to keep a copy while forwarding)",
                    field=field,
                )
        elif destination not in mailboxes and destination not in aliases:
            raise errors.UnknownDestination(
                f"{destination} is in a domain hosted here but is neither a mailbox nor an alias",
                field=field,
            )
    # Walk the alias graph from the new destinations; reaching the source again is a loop.
    seen: set[str] = set()
    frontier = {d for d in local if d in aliases and d != source}
    while frontier:
        seen |= frontier
        next_hops = set(
            session.exec(
                select(AliasRow.destination).where(col(AliasRow.source).in_(frontier))
            ).all()
        )
        if source in next_hops:
            raise errors.AliasLoop(
                f"{source} would reach itself again through other aliases", field=field
            )
        frontier = alias_sources(session, next_hops - seen)


@retried
def create_alias(
    session: Session, source: str, destinations: list[str], scope: frozenset[str] | None = None
) -> AliasPublic:
    lock_alias_graph(session)
    domain_id = require_hosted(session, source, "source")
    exists = errors.AliasExists(
        f"{source} is already an alias; change its destinations instead", field="source"
    )
    if _alias_rows(session, source):
        raise exists
    _check_destinations(session, source, destinations, "destinations", scope)
    for destination in destinations:
        session.add(AliasRow(domain_id=domain_id, source=source, destination=destination))
    commit_or_conflict(session, exists)
    return _alias_public(source, destinations)


def list_aliases(
    session: Session,
    page: PageParams,
    domain: str | None = None,
    source: str | None = None,
    destination: str | None = None,
    scope: frozenset[str] | None = None,
) -> tuple[list[AliasPublic], int | None, str | None]:
    conditions: list[ColumnElement[bool]] = []
    if scope is not None:
        conditions.append(in_scope(col(AliasRow.domain_id), scope))
    if domain is not None:
        conditions.append(of_domain(session, col(AliasRow.domain_id), domain))
    if source is not None:
        conditions.append(col(AliasRow.source) == source)
    if destination is not None:
        conditions.append(col(AliasRow.destination) == destination)
    total = page.total(
        session, select(func.count(func.distinct(AliasRow.source))).where(*conditions)
    )
    query = select(AliasRow.source).where(*conditions).distinct()
    if domain is not None and source is None and destination is None:
        query = domain_range(query, AliasRow, "ix_virtual_aliases_domain_id_source")
    if page.after is not None:
        query = query.where(AliasRow.source > page.after)
    sources = session.exec(query.order_by(AliasRow.source).limit(page.limit + 1)).all()
    shown, cursor = page_slice(sources, page)
    sources = sources[:shown]
    grouped: dict[str, list[str]] = {s: [] for s in sources}
    if sources:
        rows = session.exec(
            select(AliasRow.source, AliasRow.destination).where(col(AliasRow.source).in_(sources))
        ).all()
        for row_source, row_destination in rows:
            grouped[row_source].append(row_destination)
    return [_alias_public(s, d) for s, d in grouped.items()], total, cursor


def read_alias(session: Session, source: str) -> AliasPublic:
    return _alias_public(source, (r.destination for r in _require_alias(session, source)))


@retried
def replace_destinations(
    session: Session, source: str, destinations: list[str], scope: frozenset[str] | None = None
) -> AliasPublic:
    lock_alias_graph(session)
    rows = _require_alias(session, source)
    _check_destinations(session, source, destinations, "destinations", scope)
    wanted = set(destinations)
    current = {row.destination for row in rows}
    for row in rows:
        if row.destination not in wanted:
            session.delete(row)
    for destination in destinations:
        if destination not in current:
            session.add(
                AliasRow(domain_id=rows[0].domain_id, source=source, destination=destination)
            )
    # Dropping destinations makes no address vanish: the source keeps at least one row.
    session.commit()
    return _alias_public(source, destinations)


@retried
def add_destination(
    session: Session, source: str, destination: str, scope: frozenset[str] | None = None
) -> AliasPublic:
    lock_alias_graph(session)
    rows = _require_alias(session, source)
    exists = errors.DestinationExists(
        f"{destination} is already a destination of {source}", field="destination"
    )
    if any(row.destination == destination for row in rows):
        raise exists
    _check_destinations(session, source, [destination], "destination", scope)
    session.add(AliasRow(domain_id=rows[0].domain_id, source=source, destination=destination))
    commit_or_conflict(session, exists)
    return _alias_public(source, [*(r.destination for r in rows), destination])


@retried
def remove_destination(session: Session, source: str, destination: str) -> AliasPublic:
    lock_alias_graph(session)
    rows = _require_alias(session, source)
    match = [row for row in rows if row.destination == destination]
    if not match:
        raise errors.NotFound(f"{destination} is not a destination of {source}")
    if len(rows) == 1:
        raise errors.LastDestination(
            f"{destination} is the last destination of {source}; delete the alias instead"
        )
    session.delete(match[0])
    session.commit()
    return _alias_public(source, (r.destination for r in rows if r is not match[0]))


@retried
def delete_alias(
    session: Session, source: str, cascade: bool, scope: frozenset[str] | None = None
) -> AliasDeleted:
    lock_alias_graph(session)
    rows = _require_alias(session, source)
    destinations = sorted(row.destination for row in rows)
    session.exec(delete(AliasRow).where(col(AliasRow.source) == source))
    session.flush()
    removed = prune_dangling(session, {source}, refuse=not cascade, scope=scope)
    session.commit()
    return AliasDeleted(
        source=source, destinations_removed=destinations, alias_destinations_removed=removed
    )
