from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from app.audit import AuditDep
from app.auth import ADMIN
from app.deps import SessionDep, WriteSessionDep
from app.errors import NotFound, problem_responses
from app.keys import (
    KeyCreate,
    KeyCreated,
    KeyPublic,
    KeysPage,
    create_key,
    find_key,
    key_public,
    list_keys,
    new_key_id,
    revoke_key,
)
from app.pagination import PageDep

router = APIRouter(prefix="/keys", tags=["keys"], dependencies=[ADMIN])

KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="The key's public id.")]


class KeyNotFound(NotFound):
    code, title = "key-not-found", "API key not found"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_key",
    summary="Create an API key",
    responses=problem_responses(400, 403, 415, 422),
)
def create_api_key(
    body: KeyCreate, session: WriteSessionDep, audit: AuditDep, response: Response
) -> KeyCreated:
    """Make a key and answer it once: only its hash is stored.

    `admin: true` for a key that can do everything; otherwise `domains` lists the
    domains whose mailboxes and aliases it manages, `read_only` limits it to reads,
    and `send_as` lists the From addresses (or `@domain` patterns) it may send as.
    Needs an admin key.
    """
    key_id = new_key_id()
    audit.target = f"key:{key_id}"
    created = create_key(session, body, key_id)
    response.headers["Location"] = f"/keys/{created.id}"
    return created


@router.get(
    "",
    operation_id="list_keys",
    summary="List API keys",
    responses=problem_responses(403, 422),
)
def list_api_keys(session: SessionDep, page: PageDep) -> KeysPage:
    """All keys, revoked ones included, in id order. Never the keys themselves."""
    items, total, cursor = list_keys(session, page)
    return KeysPage(items=items, total=total, limit=page.limit, next_cursor=cursor)


@router.get(
    "/{key_id}",
    operation_id="read_key",
    summary="Read an API key",
    responses=problem_responses(403, 404, 422),
)
def read_api_key(key_id: KeyId, session: SessionDep) -> KeyPublic:
    """The key's name, rights, times and state."""
    row = find_key(session, key_id)
    if row is None:
        raise KeyNotFound(f"no key {key_id}")
    return key_public(row)


@router.delete(
    "/{key_id}",
    operation_id="revoke_key",
    summary="Revoke an API key",
    responses=problem_responses(403, 404, 422),
)
def revoke_api_key(key_id: KeyId, session: WriteSessionDep, audit: AuditDep) -> KeyPublic:
    """Revoke the key: from now on it answers 401. The row stays, for the audit trail."""
    audit.target = f"key:{key_id}"
    row = find_key(session, key_id)
    if row is None:
        raise KeyNotFound(f"no key {key_id}")
    return key_public(revoke_key(session, row))
