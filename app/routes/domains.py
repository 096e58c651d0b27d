from fastapi import APIRouter, Response, status

from app import crud
from app.audit import AuditDep
from app.auth import ADMIN, READ, PrincipalDep, require_domain
from app.deps import SessionDep, SettingsDep, WriteSessionDep
from app.errors import problem_responses
from app.models import DomainCreate, DomainDeleted, DomainDetail, DomainPublic, DomainsPage
from app.pagination import PageDep
from app.params import Cascade, DomainPath, Search

router = APIRouter(prefix="/domains", tags=["domains"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_domain",
    summary="Host a new domain",
    dependencies=[ADMIN],
    responses=problem_responses(400, 403, 409, 415, 422),
)
def create_domain(
    body: DomainCreate, session: WriteSessionDep, response: Response, audit: AuditDep
) -> DomainPublic:
    """Add a row to `virtual_domains`, so Postfix accepts mail for the domain.

    The name is lower-cased and stored in IDNA A-label form (`bücher.de` becomes
    `xn--bcher-kva.de`), which is what Postfix looks up. Needs an admin key.
    """
    audit.target = body.name
    domain = crud.create_domain(session, body.name)
    response.headers["Location"] = f"/domains/{domain.name}"
    return domain


@router.get(
    "",
    operation_id="list_domains",
    summary="List hosted domains",
    dependencies=[READ],
    responses=problem_responses(422),
)
def list_domains(
    session: SessionDep, principal: PrincipalDep, page: PageDep, q: Search = None
) -> DomainsPage:
    """Domains in name order, a page at a time; follow `next_cursor` for more.

    A domain-scoped key sees only its own domains."""
    items, total, cursor = crud.list_domains(session, page, q, principal.scope)
    return DomainsPage(items=items, total=total, limit=page.limit, next_cursor=cursor)


@router.get(
    "/{name}",
    operation_id="read_domain",
    summary="Read a domain with its counts",
    dependencies=[READ],
    responses=problem_responses(403, 404, 422),
)
def read_domain(
    name: DomainPath, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> DomainDetail:
    """The domain, how many mailboxes and aliases it has, and where its maildirs live."""
    require_domain(principal, name, "name")
    return crud.read_domain(session, name, settings.MAILDIR_ROOT)


@router.delete(
    "/{name}",
    operation_id="delete_domain",
    summary="Stop hosting a domain",
    dependencies=[ADMIN],
    responses=problem_responses(403, 404, 409, 422),
)
def delete_domain(
    name: DomainPath,
    session: WriteSessionDep,
    settings: SettingsDep,
    audit: AuditDep,
    cascade: Cascade = False,
) -> DomainDeleted:
    """Delete the domain. A domain that still has mailboxes or aliases, or that other
    domains' aliases deliver to, is refused with 409 unless `cascade=true`; then all of
    them are deleted too and the answer says what was removed.

    Maildirs are never deleted: `maildirs_kept` names the directory to remove by hand.
    Needs an admin key.
    """
    audit.target = name
    return crud.delete_domain(session, name, cascade, settings.MAILDIR_ROOT)
