"""Rules for a domain's DKIM keys (mailprov_dkim_keys).

At most one key of a domain is ``active`` (the one rspamd signs with); every key
that exists is published. Changes to a domain's keys lock its
``virtual_domains`` row first, so two rotations at once cannot leave two active
keys or none. Keys are made (slowly, for RSA) and sealed by the caller before
the transaction starts.
"""

from sqlmodel import Session, col, select

from app import dkim, errors
from app.clock import aware, utcnow
from app.crud.common import commit_or_conflict
from app.models import DkimKeyDeleted, DkimKeyPublic, DkimKeys
from app.tables import DkimKey, Domain


def _public(domain: str, key: DkimKey) -> DkimKeyPublic:
    return DkimKeyPublic(
        domain=domain,
        selector=key.selector,
        algorithm=key.algorithm,
        bits=key.bits,
        state=key.state,
        created_at=aware(key.created_at),
        activated_at=aware(key.activated_at),
        retired_at=aware(key.retired_at),
        record_name=dkim.record_name(key.selector, domain),
        record_value=dkim.txt_value(key.algorithm, key.public_key),
    )


def _domain(session: Session, name: str, *, lock: bool = False) -> Domain:
    query = select(Domain).where(Domain.name == name)
    domain = session.exec(query.with_for_update() if lock else query).first()
    if domain is None or domain.id is None:
        raise errors.DomainNotFound(f"{name} is not hosted here")
    return domain


def keys_of(session: Session, name: str) -> list[DkimKey]:
    """Every key of the domain (all are published), newest first."""
    domain = _domain(session, name)
    rows = session.exec(
        select(DkimKey)
        .where(DkimKey.domain_id == domain.id)
        .order_by(col(DkimKey.created_at).desc(), col(DkimKey.id).desc())
    ).all()
    return list(rows)


def list_keys(session: Session, name: str) -> DkimKeys:
    return DkimKeys(domain=name, items=[_public(name, key) for key in keys_of(session, name)])


def _key(session: Session, domain: Domain, selector: str) -> DkimKey:
    key = session.exec(
        select(DkimKey).where(DkimKey.domain_id == domain.id, DkimKey.selector == selector)
    ).first()
    if key is None:
        raise errors.DkimKeyNotFound(
            f"{domain.name} has no DKIM key with selector {selector}", field="selector"
        )
    return key


def _active(session: Session, domain: Domain) -> DkimKey | None:
    return session.exec(
        select(DkimKey).where(DkimKey.domain_id == domain.id, DkimKey.state == "active")
    ).first()


def _retire(session: Session, key: DkimKey | None) -> None:
    if key is not None:
        key.state, key.retired_at = "retired", utcnow()
        session.add(key)


def add_key(
    session: Session,
    name: str,
    selector: str,
    new: dkim.NewKey,
    sealed: str,
    *,
    activate: bool,
) -> DkimKeyPublic:
    """Store a new key. It signs at once when ``activate`` or when the domain has no
    active key; otherwise it waits, published, as ``pending``. The key it replaces
    as active is retired, and stays published."""
    domain = _domain(session, name, lock=True)
    taken = errors.DkimKeyExists(
        f"{name} already has a DKIM key with selector {selector}", field="selector"
    )
    if session.exec(
        select(DkimKey.id).where(DkimKey.domain_id == domain.id, DkimKey.selector == selector)
    ).first():
        raise taken
    current = _active(session, domain)
    now = utcnow()
    signs = activate or current is None
    if signs:
        _retire(session, current)
    assert domain.id is not None
    key = DkimKey(
        domain_id=domain.id,
        selector=selector,
        algorithm=new.algorithm,
        bits=new.bits,
        public_key=new.public_key,
        private_key=sealed,
        state="active" if signs else "pending",
        created_at=now,
        activated_at=now if signs else None,
    )
    session.add(key)
    commit_or_conflict(session, taken)
    return _public(name, key)


def activate_key(session: Session, name: str, selector: str) -> DkimKeyPublic:
    """Make a pending (or retired) key the one that signs; the active one is retired."""
    domain = _domain(session, name, lock=True)
    key = _key(session, domain, selector)
    if key.state != "active":
        _retire(session, _active(session, domain))
        key.state, key.activated_at, key.retired_at = "active", utcnow(), None
        session.add(key)
        session.commit()
    return _public(name, key)


def delete_key(session: Session, name: str, selector: str, force: bool) -> DkimKeyDeleted:
    """Remove a key (its record can go from the zone). The active key only with
    ``force``: the domain's mail is then no longer signed."""
    domain = _domain(session, name, lock=True)
    key = _key(session, domain, selector)
    if key.state == "active" and not force:
        raise errors.DkimKeyActive(
            f"{selector} signs {name}'s mail: rotate to a new key first, "
            "or repeat with force=true to stop signing",
            field="selector",
            location="path",
        )
    session.delete(key)
    session.commit()
    return DkimKeyDeleted(
        domain=name, selector=selector, record_name=dkim.record_name(selector, name)
    )


def sealed_keys(session: Session) -> list[tuple[str, DkimKey]]:
    """(domain, key) for every key of every hosted domain, for ``mailprov dkim sync``."""
    rows = session.exec(
        select(Domain.name, DkimKey)
        .join(DkimKey, col(DkimKey.domain_id) == col(Domain.id))
        .order_by(col(Domain.name), col(DkimKey.selector))
    ).all()
    return [(domain, key) for domain, key in rows]
