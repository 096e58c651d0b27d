from fastapi import APIRouter, Response, status

from app import crud
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
    responses=problem_responses(400, 409, 415, 422),
)
def create_alias(body: AliasCreate, session: WriteSessionDep, response: Response) -> AliasPublic:
    """Forward mail for `source` to `destinations`: one `virtual_aliases` row each.

    `source` is an address or `@domain` (a catch-all) in a hosted domain.
    Destinations may be external; a destination in a hosted domain must be an
    existing mailbox or alias. Loops are refused; the source may name itself only
    when it is also a mailbox (to keep a copy while forwarding). A catch-all never
    swallows mail for existing mailboxes: Postfix's email2email map, looked up after
    the alias map, maps each mailbox to itself.
    """
    alias = crud.create_alias(session, body.source, body.destinations)
    response.headers["Location"] = f"/aliases/{alias.source}"
    return alias


@router.get(
    "",
    operation_id="list_aliases",
    summary="List aliases",
    responses=problem_responses(422),
)
def list_aliases(
    session: SessionDep,
    page: PageDep,
    domain: DomainFilter = None,
    source: SourceFilter = None,
    destination: DestinationFilter = None,
) -> AliasesPage:
    """Aliases in source order, each with all its destinations."""
    items, total, cursor = crud.list_aliases(session, page, domain, source, destination)
    return AliasesPage(items=items, total=total, limit=page.limit, next_cursor=cursor)


@router.get(
    "/{source}",
    operation_id="read_alias",
    summary="Read an alias",
    responses=problem_responses(404, 422),
)
def read_alias(source: SourcePath, session: SessionDep) -> AliasPublic:
    """The alias and its destinations."""
    return crud.read_alias(session, source)


@router.put(
    "/{source}",
    operation_id="replace_alias_destinations",
    summary="Replace an alias's destinations",
    responses=problem_responses(400, 404, 415, 422),
)
def replace_alias_destinations(
    source: SourcePath, body: AliasUpdate, session: WriteSessionDep
) -> AliasPublic:
    """Set the complete list of destinations; rows not in the list are removed."""
    return crud.replace_destinations(session, source, body.destinations)


@router.delete(
    "/{source}",
    operation_id="delete_alias",
    summary="Delete an alias",
    responses=problem_responses(404, 409, 422),
)
def delete_alias(
    source: SourcePath, session: WriteSessionDep, cascade: Cascade = False
) -> AliasDeleted:
    """Delete all rows of the alias. If other aliases deliver to it, refused with 409
    unless `cascade=true`, which removes those destinations too."""
    return crud.delete_alias(session, source, cascade)


@router.post(
    "/{source}/destinations",
    operation_id="add_alias_destination",
    summary="Add one destination to an alias",
    responses=problem_responses(400, 404, 409, 415, 422),
)
def add_alias_destination(
    source: SourcePath, body: DestinationAdd, session: WriteSessionDep
) -> AliasPublic:
    """Add a destination row; the same rules as on creation apply."""
    return crud.add_destination(session, source, body.destination)


@router.delete(
    "/{source}/destinations/{destination}",
    operation_id="remove_alias_destination",
    summary="Remove one destination from an alias",
    responses=problem_responses(404, 409, 422),
)
def remove_alias_destination(
    source: SourcePath, destination: DestinationPath, session: WriteSessionDep
) -> AliasPublic:
    """Remove a destination row. The last destination cannot be removed (409): delete
    the alias instead."""
    return crud.remove_destination(session, source, destination)
