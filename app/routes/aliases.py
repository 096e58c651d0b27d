from fastapi import APIRouter, Response, status

from app import crud
from app.addresses import domain_of
from app.audit import AuditDep
from app.auth import READ, WRITE, PrincipalDep, require_domain
from app.deps import SessionDep, WriteSessionDep
from app.errors import problem_responses
from app.models import (
    AliasCreate,
    AliasDeleted,
    AliasesPage,
    AliasPublic,
    AliasUpdate,
    DestinationAdd,
)
from app.pagination import PageDep
from app.params import (
    Cascade,
    DestinationFilter,
    DestinationPath,
    DomainFilter,
    SourceFilter,
    SourcePath,
)

router = APIRouter(prefix="/aliases", tags=["aliases"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_alias",
    summary="Create an alias or catch-all",
    dependencies=[WRITE],
    responses=problem_responses(400, 403, 409, 415, 422),
)
def create_alias(
    body: AliasCreate,
    session: WriteSessionDep,
    principal: PrincipalDep,
    audit: AuditDep,
    response: Response,
) -> AliasPublic:
    """Forward mail for `source` to `destinations`: one `virtual_aliases` row each.

    `source` is an address or `@domain` (a catch-all) in a hosted domain.
    Destinations may be external; a destination in a hosted domain must be an
    existing mailbox or alias. Loops are refused; the source may name itself only
    when it is also a mailbox (to keep a copy while forwarding). A catch-all never
    swallows mail for existing mailboxes: Postfix's email2email map, looked up after
    the alias map, maps each mailbox to itself. A domain-scoped key may deliver to
    its own domains and to domains not hosted here.
    """
    audit.target = body.source
    require_domain(principal, domain_of(body.source), "source", "body")
    alias = crud.create_alias(session, body.source, body.destinations, principal.scope)
    response.headers["Location"] = f"/aliases/{alias.source}"
    return alias


@router.get(
    "",
    operation_id="list_aliases",
    summary="List aliases",
    dependencies=[READ],
    responses=problem_responses(403, 422),
)
def list_aliases(
    session: SessionDep,
    principal: PrincipalDep,
    page: PageDep,
    domain: DomainFilter = None,
    source: SourceFilter = None,
    destination: DestinationFilter = None,
) -> AliasesPage:
    """Aliases in source order, each with all its destinations.

    A domain-scoped key sees only the aliases of its own domains."""
    if domain is not None:
        require_domain(principal, domain, "domain", "query")
    if source is not None:
        require_domain(principal, domain_of(source), "source", "query")
    items, total, cursor = crud.list_aliases(
        session, page, domain, source, destination, principal.scope
    )
    return AliasesPage(items=items, total=total, limit=page.limit, next_cursor=cursor)


@router.get(
    "/{source}",
    operation_id="read_alias",
    summary="Read an alias",
    dependencies=[READ],
    responses=problem_responses(403, 404, 422),
)
def read_alias(source: SourcePath, session: SessionDep, principal: PrincipalDep) -> AliasPublic:
    """The alias and its destinations."""
    require_domain(principal, domain_of(source), "source")
    return crud.read_alias(session, source)


@router.put(
    "/{source}",
    operation_id="replace_alias_destinations",
    summary="Replace an alias's destinations",
    dependencies=[WRITE],
    responses=problem_responses(400, 403, 404, 415, 422),
)
def replace_alias_destinations(
    source: SourcePath,
    body: AliasUpdate,
    session: WriteSessionDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> AliasPublic:
    """Set the complete list of destinations; rows not in the list are removed."""
    audit.target = source
    require_domain(principal, domain_of(source), "source")
    return crud.replace_destinations(session, source, body.destinations, principal.scope)


@router.delete(
    "/{source}",
    operation_id="delete_alias",
    summary="Delete an alias",
    dependencies=[WRITE],
    responses=problem_responses(403, 404, 409, 422),
)
def delete_alias(
    source: SourcePath,
    session: WriteSessionDep,
    principal: PrincipalDep,
    audit: AuditDep,
    cascade: Cascade = False,
) -> AliasDeleted:
    """Delete all rows of the alias. If other aliases deliver to it, refused with 409
    unless `cascade=true`, which removes those destinations too."""
    audit.target = source
    require_domain(principal, domain_of(source), "source")
    return crud.delete_alias(session, source, cascade, principal.scope)


@router.post(
    "/{source}/destinations",
    operation_id="add_alias_destination",
    summary="Add one destination to an alias",
    dependencies=[WRITE],
    responses=problem_responses(400, 403, 404, 409, 415, 422),
)
def add_alias_destination(
    source: SourcePath,
    body: DestinationAdd,
    session: WriteSessionDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> AliasPublic:
    """Add a destination row; the same rules as on creation apply."""
    audit.target = source
    require_domain(principal, domain_of(source), "source")
    return crud.add_destination(session, source, body.destination, principal.scope)


@router.delete(
    "/{source}/destinations/{destination}",
    operation_id="remove_alias_destination",
    summary="Remove one destination from an alias",
    dependencies=[WRITE],
    responses=problem_responses(403, 404, 409, 422),
)
def remove_alias_destination(
    source: SourcePath,
    destination: DestinationPath,
    session: WriteSessionDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> AliasPublic:
    """Remove a destination row. The last destination cannot be removed (409): delete
    the alias instead."""
    audit.target = source
    require_domain(principal, domain_of(source), "source")
    return crud.remove_destination(session, source, destination)
