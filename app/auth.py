"""Who may call: bearer API keys, per-route access levels, brute-force limits.

Every route but /health and /ready needs a valid key. Missing or bad key: 401
with ``WWW-Authenticate: Bearer``; a valid key without the right: 403.

Domain-scoped keys: anything that names a domain outside the key's list is
answered 403, decided before any lookup, so the answer is the same whether or
not that domain, mailbox or alias exists; lists and totals only ever count the
key's own domains.

Brute force: failed keys are counted per client address in the database (so
every running copy sees the same count). Past the limit, the client is
answered 429 with ``Retry-After`` until the block ends, whatever key it sends.
"""

import math
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from app.clock import utcnow
from app.config import Settings
from app.db import open_session, retried
from app.errors import Forbidden, Problem
from app.keys import KeyRejected, Principal, principal_of, verify_key
from app.metrics import AUTH_FAILURES
from app.tables import ApiKey, AuthFailure

LAST_USED_RESOLUTION = timedelta(seconds=60)  # last_used_at is written at most once a minute


class Unauthorized(Problem):
    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str, *, invalid: bool) -> None:
        challenge = 'Bearer realm="mailprov"'
        if invalid:
            challenge += ', error="invalid_token"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class TooManyFailures(Problem):
    status, code, title = 429, "too-many-failures", "Too many failed authentications"


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer mpk_...` (see `mailprov keys create`).",
)


def client_address(request: Request) -> str:
    return (request.client.host if request.client else "unknown")[:64]


def _blocked(until: datetime, now: datetime) -> TooManyFailures:
    retry_after = max(1, math.ceil((until - now).total_seconds()))
    return TooManyFailures(
        "too many failed authentications from this address; retry later",
        headers={"Retry-After": str(retry_after)},
    )


def _check_block(session: Session, client: str, now: datetime) -> None:
    row = session.get(AuthFailure, client)
    if row is not None and row.blocked_until is not None and row.blocked_until > now:
        raise _blocked(row.blocked_until, now)


@retried
def _count_failure(session: Session, client: str, settings: Settings, now: datetime) -> None:
    """Count one failure; past the limit, block the client (raises 429)."""
    window = timedelta(seconds=settings.AUTH_FAILURE_WINDOW)
    for _attempt in range(3):
        try:
            row = session.get(AuthFailure, client, with_for_update=True)
            if row is None:
                row = AuthFailure(client=client, window_start=now, failures=0)
            elif row.window_start + window <= now:
                row.window_start, row.failures, row.blocked_until = now, 0, None
            row.failures += 1
            if row.failures >= settings.AUTH_FAILURE_LIMIT:
                row.blocked_until = now + timedelta(seconds=settings.AUTH_BLOCK_SECONDS)
            session.add(row)
            session.commit()
            break
        except IntegrityError:  # another copy inserted the first failure at the same time
            session.rollback()
    else:
        return
    if row.blocked_until is not None:
        raise _blocked(row.blocked_until, now)


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    settings: Settings = request.app.state.settings
    client = client_address(request)
    now = utcnow()
    with open_session(request.app.state.engine) as session:
        try:
            _check_block(session, client, now)
        except TooManyFailures:
            AUTH_FAILURES.labels("blocked").inc()
            raise
        if credentials is None:
            AUTH_FAILURES.labels("missing").inc()
            raise Unauthorized("send an API key as Authorization: Bearer <key>", invalid=False)
        try:
            row = verify_key(session, credentials.credentials, now)
        except KeyRejected:
            AUTH_FAILURES.labels("invalid").inc()
            session.rollback()
            with open_session(request.app.state.engine, write=True) as writer:
                _count_failure(writer, client, settings, now)
            raise Unauthorized("the API key is not valid", invalid=True) from None
        principal = principal_of(row)
        stale = row.last_used_at is None or row.last_used_at + LAST_USED_RESOLUTION <= now
    if stale:
        with open_session(request.app.state.engine, write=True) as writer:
            _touch(writer, row.id, now)
    request.state.principal = principal
    return principal


@retried
def _touch(session: Session, row_id: int | None, now: datetime) -> None:
    # Several copies may write the same key's last_used_at at once (on Galera: a
    # certification conflict); run again, the later time wins.
    fresh = session.get(ApiKey, row_id)
    if fresh is not None:
        fresh.last_used_at = now
        session.add(fresh)
        session.commit()


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def require_writer(request: Request, principal: PrincipalDep) -> None:
    if principal.read_only and request.method not in {"GET", "HEAD", "OPTIONS"}:
        raise Forbidden("this key is read-only")


def require_admin(request: Request, principal: PrincipalDep) -> None:
    if not principal.admin:
        raise Forbidden("this needs an admin key")
    require_writer(request, principal)


def require_domain(principal: Principal, domain: str, field: str, location: str = "path") -> None:
    if not principal.sees(domain):
        raise Forbidden(f"{domain} is outside this key's domains", field=field, location=location)


# Route access levels. Every API route declares exactly one (tests/test_authorization.py).
ADMIN = Depends(require_admin)
WRITE = Depends(require_writer)
READ = Depends(authenticate)
