"""Small helpers shared by tests and the live-server harness (fixtures are in
conftest.py)."""

import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import CompletedProcess
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from sqlalchemy import Engine, text

from app.config import Settings
from app.db import open_session
from app.keys import KeyCreate, create_key, new_key_id
from app.main import create_app

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

TEST_COST = 4  # bcrypt's minimum: hashing speed is not what these tests measure
# Every table a test may write, children first.
TABLES = (
    "mailprov_dkim_keys",
    "virtual_aliases",
    "virtual_users",
    "virtual_domains",
    "mailprov_audit",
    "mailprov_api_keys",
    "mailprov_auth_failures",
    "mailprov_idempotency",
    "mailprov_send_rate",
)


def make_key(engine: Engine, **spec: Any) -> str:
    """A new API key (admin unless told otherwise), straight into the database."""
    spec.setdefault("name", "test")
    spec.setdefault("admin", not spec.get("domains") and not spec.get("send_as"))
    with open_session(engine, write=True) as session:
        created = create_key(session, KeyCreate(**spec), new_key_id())
    return created.key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def api_client(settings: Settings) -> Iterator["TestClient"]:
    """A TestClient on a new app for these settings, sending what the API requires."""
    # Imported here: bench/ uses this module too and would print the client's warning.
    from fastapi.testclient import TestClient

    app = create_app(settings)
    try:
        key = make_key(app.state.engine, name="admin")
        with TestClient(app, headers=bearer(key)) as client:
            yield client
    finally:
        app.state.engine.dispose()


def sql(engine: Engine, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run one statement the way Postfix or Dovecot would, and return its rows."""
    with engine.begin() as conn:
        result = conn.execute(text(statement), params)
        return [tuple(row) for row in result] if result.returns_rows else []


def empty_database(engine: Engine) -> None:
    """Delete every row the tests may have written (the schema stays)."""
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(text(f"DELETE FROM {table}"))


def api_routes(app: FastAPI) -> list[RouteContext]:
    """Every APIRoute of the app, with the paths and dependencies it is served with.

    FastAPI keeps included routers as lazy wrappers in ``app.routes``; walking the
    route contexts is what sees through them (a plain isinstance walk finds none).
    """
    routes = [
        r for r in iter_route_contexts(app.router.routes) if isinstance(r.original_route, APIRoute)
    ]
    assert routes, "no API routes found: the route walk is broken"
    return routes


def run_script(args: list[str], env: dict[str, str], timeout: float) -> CompletedProcess[str]:
    """A deploy/ script (stack.sh, ha.sh) from the checkout's root, output captured."""
    return subprocess.run(
        args,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output_tail(result: CompletedProcess[str], lines: int = 15) -> str:
    tail = (result.stdout + result.stderr).strip().splitlines()[-lines:]
    return "\n".join(tail)


def parse_exports(output: str) -> dict[str, str]:
    """The ``export NAME=value`` lines a deploy/ script's ``env`` prints."""
    values = {}
    for line in output.splitlines():
        if line.startswith("export "):
            name, _, quoted = line.removeprefix("export ").partition("=")
            words = shlex.split(quoted)
            values[name] = " ".join(words)
    return values
