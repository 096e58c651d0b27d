"""Typed dependency aliases, in one place.

Who commits: the rules do (``app/crud/*``, and ``app/keys.py`` for keys), each
change in one transaction of its own; routes and dependencies never commit.
A rule holds the commit so that it can turn a uniqueness race lost at COMMIT
into the precise 409 it knows how to word (``crud.common.commit_or_conflict``),
and so that routes can do slow work such as bcrypt hashing before the rule
starts writing, never inside the write transaction (on SQLite, the database's
write lock). A session handed out here is closed when the request ends: what
was not committed is rolled back. The audit row of a change joins the rule's
commit (``app/audit.py``).
"""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from app.config import Settings
from app.db import open_session
from app.errors import UnsupportedMediaType


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    with open_session(request.app.state.engine) as session:
        yield session


def get_write_session(request: Request) -> Iterator[Session]:
    with open_session(request.app.state.engine, write=True) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
WriteSessionDep = Annotated[Session, Depends(get_write_session)]


def require_json_body(request: Request) -> None:
    """Bodies are JSON: anything else is refused before it is parsed."""
    if request.method in {"POST", "PUT", "PATCH"}:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise UnsupportedMediaType("send the request body as application/json")
