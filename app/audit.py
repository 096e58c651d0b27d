"""The audit trail: every change, who made it, from where, and how it ended.

A change and its audit row commit in one transaction (a ``before_commit``
hook adds the row), so there is never a change without its record. A refused
or failed change is recorded in a transaction of its own. No password, hash,
key or message body ever reaches this table: entries hold the action (the
route's operationId), the target's natural key and the outcome.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import delete, event, func
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from app.auth import client_address
from app.clock import utcnow
from app.crud.common import page_slice
from app.db import retried
from app.deps import get_write_session
from app.errors import as_problem
from app.keys import Principal
from app.models import Page, example
from app.pagination import PageParams
from app.tables import AuditEntry

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Audit:
    """The record a changing request fills in; routes set ``target``."""

    action: str
    status: int
    key_id: str | None
    key_name: str | None
    client: str | None
    target: str | None = None
    outcome: str = "success"
    written: bool = False

    def entry(self, outcome: str, status: int) -> AuditEntry:
        return AuditEntry(
            at=utcnow(),
            key_id=self.key_id,
            key_name=self.key_name,
            action=self.action,
            # A refused request may name anything, lone surrogates included.
            target=(self.target or "").encode("utf-8", "replace").decode()[:255] or None,
            outcome=outcome,
            status=status,
            client=self.client,
        )


AUDIT_INFO = "mailprov_audit"


@event.listens_for(Session, "before_commit")
def _write_with_change(session: Session) -> None:
    audit: Audit | None = session.info.get(AUDIT_INFO)
    if audit is not None and not audit.written:
        session.add(audit.entry(audit.outcome, audit.status))


@event.listens_for(Session, "after_commit")
def _written(session: Session) -> None:
    # Only now: a commit that fails (a lost race) is recorded as the failure it is.
    audit: Audit | None = session.info.get(AUDIT_INFO)
    if audit is not None:
        audit.written = True


async def audit_trail(
    request: Request, session: Annotated[Session, Depends(get_write_session)]
) -> AsyncIterator[Audit | None]:
    """Router-wide: wraps every changing request, whatever ends it."""
    if request.method not in MUTATING:
        yield None
        return
    principal: Principal | None = getattr(request.state, "principal", None)
    route = request.scope.get("route")
    audit = Audit(
        action=getattr(route, "operation_id", None) or request.url.path,
        status=getattr(route, "status_code", None) or 200,
        key_id=principal.key_id if principal else None,
        key_name=principal.name if principal else None,
        client=client_address(request),
        target=next(iter(request.path_params.values()), None),
    )
    session.info[AUDIT_INFO] = audit
    try:
        yield audit
    except Exception as exc:
        if not audit.written:
            audit.written = True
            if audit.target is None:
                audit.target = await _target_in_body(request)
            # The mapping the exception handlers answer with: the row says what was sent.
            problem = as_problem(request, exc)
            entry = audit.entry(problem.code, problem.status)
            await run_in_threadpool(_record_failure, session, entry)
        raise


async def _target_in_body(request: Request) -> str | None:
    """For a request refused before its route ran: the natural key it asked for."""
    try:
        body = await request.json()
    except Exception:  # not JSON, or no body: nothing to name
        return None
    if isinstance(body, dict):
        for field in ("name", "address", "source"):
            if isinstance(body.get(field), str):
                return str(body[field])
    return None


def _record_failure(session: Session, entry: AuditEntry) -> None:
    # Whatever the request did is rolled back first; then its failure is recorded in
    # a transaction of its own (on the same connection: no second writer).
    try:
        session.rollback()
        _add_entry(session, entry)
    except (SQLAlchemyError, ValueError):
        # The database (or the value) is what failed; the request's own answer says so.
        session.rollback()


@retried
def _add_entry(session: Session, entry: AuditEntry) -> None:
    session.add(entry)
    session.commit()


AuditDep = Annotated[Audit, Depends(audit_trail)]


@retried
def purge(session: Session, retention_days: int) -> int:
    cutoff = utcnow() - timedelta(days=retention_days)
    result = session.exec(delete(AuditEntry).where(col(AuditEntry.at) < cutoff))
    session.commit()
    return int(result.rowcount or 0)


# ---------------------------------------------------------------- reading


class AuditPublic(BaseModel):
    id: int
    at: datetime
    key_id: str | None = Field(description="Public id of the key that made the request.")
    key_name: str | None
    action: str = Field(description="The operationId of the request, e.g. create_mailbox.")
    target: str | None = Field(description="Natural key of what was changed.")
    outcome: str = Field(description="`success`, or the problem type code that ended it.")
    status: int = Field(description="HTTP status of the answer.")
    client: str | None = Field(description="Client address.")


class AuditPage(Page):
    model_config = example(
        {"total": 1, "limit": 50, "next_cursor": None,
         "items": [{"id": 42, "at": "2026-11-24T10:00:00Z", "key_id": "3f9a61c2d4e5b807",
                    "key_name": "example.org helpdesk", "action": "create_mailbox",
                    "target": "john@example.org", "outcome": "success", "status": 201,
                    "client": "192.0.2.10"}]}
    )  # fmt: skip

    items: list[AuditPublic]


def audit_public(row: AuditEntry) -> AuditPublic:
    assert row.id is not None
    return AuditPublic(**row.model_dump(exclude={"at"}), at=row.at.replace(tzinfo=UTC))


def read_audit(
    session: Session,
    page: PageParams,
    before_id: int | None,
    *,
    target: str | None,
    key_id: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
) -> tuple[list[AuditPublic], int | None, str | None]:
    """Newest first; the cursor is the last id seen."""
    conditions: list[Any] = []
    if target is not None:
        conditions.append(col(AuditEntry.target) == target)
    if key_id is not None:
        conditions.append(col(AuditEntry.key_id) == key_id)
    if action is not None:
        conditions.append(col(AuditEntry.action) == action)
    if since is not None:
        conditions.append(col(AuditEntry.at) >= since)
    if until is not None:
        conditions.append(col(AuditEntry.at) < until)
    total = page.total(session, select(func.count()).select_from(AuditEntry).where(*conditions))
    query = select(AuditEntry).where(*conditions)
    if before_id is not None:
        query = query.where(col(AuditEntry.id) < before_id)
    rows = session.exec(query.order_by(col(AuditEntry.id).desc()).limit(page.limit + 1)).all()
    shown, cursor = page_slice([str(row.id) for row in rows], page)
    return [audit_public(row) for row in rows[:shown]], total, cursor
