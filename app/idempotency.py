"""Idempotency-Key for /send, kept in the database so every running copy agrees.

Same key and same payload within the window: the first answer again, nothing
sent twice. Same key, other payload: 409. The first request still running:
409. Only definitive answers are kept; an answer that says "try again"
(unreachable, busy, timeout before the message was sent) frees the key.
"""

import hashlib
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from app.clock import utcnow
from app.db import retried
from app.errors import Conflict
from app.tables import IdempotencyRecord

IN_FLIGHT = "in-flight"
DONE = "done"
# An in-flight record older than this belongs to a copy that died mid-send.
STALE_AFTER = timedelta(minutes=15)


class IdempotencyConflict(Conflict):
    code, title = "idempotency-key-reused", "Idempotency-Key used for another request"


class IdempotencyInFlight(Conflict):
    code, title = "idempotency-in-flight", "A request with this Idempotency-Key is running"


def request_hash(payload: dict[str, Any]) -> str:
    """What makes two requests "the same": the payload, minus the password."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@retried
def begin(
    session: Session, key_id: str, idem_key: str, digest: str, window: timedelta
) -> IdempotencyRecord | None:
    """Claim the key. Returns the finished record to replay, or None to go ahead."""
    now = utcnow()
    for _attempt in range(3):
        row = session.exec(
            select(IdempotencyRecord).where(
                IdempotencyRecord.key_id == key_id, IdempotencyRecord.idem_key == idem_key
            )
        ).first()
        if row is not None:
            expired = row.created_at + window <= now
            stale = row.state == IN_FLIGHT and row.created_at + STALE_AFTER <= now
            if expired or stale:
                session.delete(row)
                session.commit()
                continue
            if row.request_hash != digest:
                raise IdempotencyConflict(
                    "this Idempotency-Key was used for a different request", field="Idempotency-Key"
                )
            if row.state == IN_FLIGHT:
                raise IdempotencyInFlight(
                    "a request with this Idempotency-Key is still running; retry later",
                    headers={"Retry-After": "5"},
                )
            return row
        session.add(
            IdempotencyRecord(
                key_id=key_id,
                idem_key=idem_key,
                request_hash=digest,
                state=IN_FLIGHT,
                created_at=now,
            )
        )
        try:
            session.commit()
            return None
        except IntegrityError:  # another copy claimed it at the same moment
            session.rollback()
    raise IdempotencyInFlight("this Idempotency-Key is contended; retry later")


@retried
def finish(
    session: Session, key_id: str, idem_key: str, status: int, response: dict[str, Any]
) -> None:
    """Keep the definitive answer, with whatever else the request's transaction holds
    (its audit entry). Run again on a conflict: the message went out once, already."""
    row = session.exec(
        select(IdempotencyRecord).where(
            IdempotencyRecord.key_id == key_id, IdempotencyRecord.idem_key == idem_key
        )
    ).one()
    row.state, row.status, row.response = DONE, status, response
    session.add(row)
    session.commit()


@retried
def release(session: Session, key_id: str, idem_key: str) -> None:
    """Free the key after an answer that invites a retry."""
    session.exec(
        delete(IdempotencyRecord).where(
            col(IdempotencyRecord.key_id) == key_id, col(IdempotencyRecord.idem_key) == idem_key
        )
    )
    session.commit()
