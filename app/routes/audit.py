from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.audit import AuditPage, read_audit
from app.auth import ADMIN
from app.clock import naive_utc
from app.deps import SessionDep
from app.errors import InvalidCursor, Unprocessable, problem_responses
from app.pagination import PageDep

router = APIRouter(prefix="/audit", tags=["audit"], dependencies=[ADMIN])

# An ISO 8601 date or date-time; numbers (which pydantic would read as epoch seconds) are not.
ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$"


def _time(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        return naive_utc(datetime.fromisoformat(value))
    except ValueError:
        raise Unprocessable(
            f"{field} is not a valid ISO 8601 time", field=field, location="query"
        ) from None


@router.get(
    "",
    operation_id="list_audit",
    summary="Read the audit trail",
    responses=problem_responses(403, 422),
)
def list_audit(
    session: SessionDep,
    page: PageDep,
    target: Annotated[
        str | None, Query(max_length=255, description="Natural key, e.g. john@example.org.")
    ] = None,
    key: Annotated[
        str | None, Query(max_length=16, description="Public id of the key that acted.")
    ] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="operationId, e.g. delete_mailbox.")
    ] = None,
    since: Annotated[
        str | None,
        Query(
            pattern=ISO_TIME, description="From this ISO 8601 time on (inclusive; UTC if no zone)."
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(pattern=ISO_TIME, description="Before this ISO 8601 time (UTC if no zone)."),
    ] = None,
) -> AuditPage:
    """Every change, newest first: who (key id and name), when, what, on what, from
    where, and how it ended. Entries older than the retention setting are purged."""
    before_id = None
    if page.after is not None:
        if not page.after.isdigit():
            raise InvalidCursor(
                "cursor is not one this service issued", field="cursor", location="query"
            )
        before_id = int(page.after)
    items, total, cursor = read_audit(
        session,
        page,
        before_id,
        target=target,
        key_id=key,
        action=action,
        since=_time(since, "since"),
        until=_time(until, "until"),
    )
    return AuditPage(items=items, total=total, limit=page.limit, next_cursor=cursor)
