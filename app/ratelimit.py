"""Per-key rate limit on /send, kept in the database so every running copy shares it.

A generic cell rate algorithm (GCRA): each key has one row holding its
"theoretical arrival time" (TAT). A limit of L messages per W seconds spaces
messages T = W / L apart and allows a burst of L; a request is allowed when,
after it, the TAT is at most W ahead of now. One row per key, one locked
read-and-write per message, and no window edge where 2 L can slip through.

Answers carry the limit as ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset`` (seconds until the full quota is back), with
``RateLimit-Policy``; a refusal is 429 with ``Retry-After``.
"""

import math
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from app.clock import utcnow
from app.db import retried
from app.errors import Problem
from app.tables import SendRate

MICROS = 1_000_000


@dataclass(frozen=True)
class Quota:
    limit: int
    window: int
    remaining: int
    reset: int  # seconds until the whole quota is available again

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
            "RateLimit-Policy": f"{self.limit};w={self.window}",
        }


class RateLimited(Problem):
    status, code, title = 429, "rate-limited", "Too many messages from this key"
    retryable = True  # nothing was sent; frees an Idempotency-Key


def _now_micros() -> int:
    return int(utcnow().timestamp() * MICROS)


@retried
def take(session: Session, key_id: str, limit: int, window: int) -> Quota:
    """Count one message for ``key_id``, or raise RateLimited (counting nothing)."""
    spacing = window * MICROS / limit
    horizon = window * MICROS
    for _attempt in range(3):
        now = _now_micros()
        try:
            row = session.get(SendRate, key_id, with_for_update=True)
            if row is None:
                row = SendRate(key_id=key_id, tat=now)
            after = max(row.tat, now) + spacing
            if after - now > horizon:
                session.rollback()
                wait = (after - horizon - now) / MICROS
                quota = Quota(limit, window, 0, math.ceil((row.tat - now) / MICROS))
                raise RateLimited(
                    f"this key may send {limit} messages per {window} s; retry later",
                    headers={**quota.headers(), "Retry-After": str(max(1, math.ceil(wait)))},
                )
            row.tat = math.ceil(after)
            session.add(row)
            session.commit()
        except IntegrityError:  # another copy counted this key's first message just now
            session.rollback()
            continue
        remaining = math.floor((horizon - (after - now)) / spacing + 1e-9)
        return Quota(limit, window, remaining, math.ceil((after - now) / MICROS))
    raise RateLimited(
        "this key's send counter is contended; retry shortly", headers={"Retry-After": "1"}
    )
