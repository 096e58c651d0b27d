"""Keyset pagination: every list is ordered by its natural key, and the cursor
is the last key of the previous page, so a page costs the same at any depth."""

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from sqlmodel import Session

from app.errors import InvalidCursor


def encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": key}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidCursor(
            "cursor is not one this service issued", field="cursor", location="query"
        ) from None
    if not isinstance(value, str):
        raise InvalidCursor(
            "cursor is not one this service issued", field="cursor", location="query"
        )
    return value


class PageParams:
    def __init__(self, limit: int, after: str | None, with_total: bool = True) -> None:
        self.limit = limit
        self.after = after
        self.with_total = with_total

    def total(self, session: Session, count: Any) -> int | None:
        """Run the ``SELECT count(...)`` for ``total``, unless the caller said total=false:
        the one part of a page whose cost grows with the size of the list."""
        return session.exec(count).one() if self.with_total else None

    def next_cursor(self, keys: list[str]) -> str | None:
        """Given the keys of up to ``limit + 1`` fetched rows, the cursor of the next page."""
        return encode_cursor(keys[self.limit - 1]) if len(keys) > self.limit else None


def page_params(
    request: Request,
    limit: Annotated[
        int | None, Query(ge=1, description="Items per page (default 50, at most 500).")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=1024, description="`next_cursor` of the previous page."),
    ] = None,
    total: Annotated[
        bool,
        Query(
            description="Count the matches on all pages (`total`). `false` answers "
            "`total: null` and skips the count, whose cost grows with the list: "
            "use it when paging through large lists."
        ),
    ] = True,
) -> PageParams:
    settings = request.app.state.settings
    if limit is None:
        limit = settings.PAGE_SIZE_DEFAULT
    limit = min(limit, settings.PAGE_SIZE_MAX)
    return PageParams(limit, decode_cursor(cursor) if cursor is not None else None, total)


PageDep = Annotated[PageParams, Depends(page_params)]
