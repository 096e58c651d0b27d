from fastapi import APIRouter, Response, status

from app import crud
from app.addresses import domain_of
from app.audit import AuditDep
from app.auth import READ, WRITE, PrincipalDep, require_domain
from app.deps import SessionDep, SettingsDep, WriteSessionDep
from app.errors import problem_responses
from app.models import (
    MailboxCreate,
    MailboxDeleted,
    MailboxesPage,
    MailboxPublic,
    MailboxUpdate,
)
from app.pagination import PageDep
from app.params import AddressPath, Cascade, DomainFilter, Search
from app.security import hash_password

router = APIRouter(prefix="/mailboxes", tags=["mailboxes"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_mailbox",
    summary="Create a mailbox",
    dependencies=[WRITE],
    responses=problem_responses(400, 403, 409, 415, 422),
)
def create_mailbox(
    body: MailboxCreate,
    session: WriteSessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    audit: AuditDep,
    response: Response,
) -> MailboxPublic:
    """Add a row to `virtual_users`: Dovecot accepts the login and Postfix the mail.

    The address's domain must be hosted. Give `password` (hashed here as
    `{BLF-CRYPT}` bcrypt) or, when migrating, `password_hash` in a Dovecot scheme.
    """
    audit.target = body.address
    require_domain(principal, domain_of(body.address), "address", "body")
    if body.password is not None:
        # Hash before the transaction starts: bcrypt must not hold the write lock.
        stored = hash_password(body.password.get_secret_value(), settings.BCRYPT_COST)
    else:
        assert body.password_hash is not None
        stored = body.password_hash.get_secret_value()
    mailbox = crud.create_mailbox(session, body.address, stored, body.quota, settings.MAILDIR_ROOT)
    response.headers["Location"] = f"/mailboxes/{mailbox.address}"
    return mailbox


@router.get(
    "",
    operation_id="list_mailboxes",
    summary="List mailboxes",
    dependencies=[READ],
    responses=problem_responses(403, 422),
)
def list_mailboxes(
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    page: PageDep,
    domain: DomainFilter = None,
    q: Search = None,
) -> MailboxesPage:
    """Mailboxes in address order, optionally of one domain or matching a search text.

    A domain-scoped key sees only the mailboxes of its own domains."""
    if domain is not None:
        require_domain(principal, domain, "domain", "query")
    items, total, cursor = crud.list_mailboxes(
        session, page, settings.MAILDIR_ROOT, domain, q, principal.scope
    )
    return MailboxesPage(items=items, total=total, limit=page.limit, next_cursor=cursor)


@router.get(
    "/{address}",
    operation_id="read_mailbox",
    summary="Read a mailbox",
    dependencies=[READ],
    responses=problem_responses(403, 404, 422),
)
def read_mailbox(
    address: AddressPath, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> MailboxPublic:
    """The mailbox's address, quota and maildir. The password hash is never returned."""
    require_domain(principal, domain_of(address), "address")
    return crud.read_mailbox(session, address, settings.MAILDIR_ROOT)


@router.patch(
    "/{address}",
    operation_id="update_mailbox",
    summary="Change a mailbox's password or quota",
    dependencies=[WRITE],
    responses=problem_responses(400, 403, 404, 415, 422),
)
def update_mailbox(
    address: AddressPath,
    body: MailboxUpdate,
    session: WriteSessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> MailboxPublic:
    """Set a new `password` (or `password_hash`) and/or `quota`.

    Dovecot caches logins for a short while (auth_cache_ttl): an old password may
    keep working until its cache entry expires.
    """
    audit.target = address
    require_domain(principal, domain_of(address), "address")
    stored = None
    if body.password is not None:
        stored = hash_password(body.password.get_secret_value(), settings.BCRYPT_COST)
    elif body.password_hash is not None:
        stored = body.password_hash.get_secret_value()
    return crud.update_mailbox(session, address, stored, body.quota, settings.MAILDIR_ROOT)


@router.delete(
    "/{address}",
    operation_id="delete_mailbox",
    summary="Delete a mailbox",
    dependencies=[WRITE],
    responses=problem_responses(403, 404, 409, 422),
)
def delete_mailbox(
    address: AddressPath,
    session: WriteSessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    audit: AuditDep,
    cascade: Cascade = False,
) -> MailboxDeleted:
    """Delete the row from `virtual_users`; Postfix then rejects mail for it.

    If aliases still deliver to the mailbox, the delete is refused with 409 (an alias
    to a missing mailbox is accepted by Postfix and bounces later) unless
    `cascade=true`, which removes those destinations too. The maildir stays on disk.
    """
    audit.target = address
    require_domain(principal, domain_of(address), "address")
    return crud.delete_mailbox(session, address, cascade, settings.MAILDIR_ROOT, principal.scope)
