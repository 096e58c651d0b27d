"""Transactions run again when the database refused them only for a concurrent one
(app/db.py ``retried``): a Galera certification failure or a deadlock (1213), a lock
wait timeout, PostgreSQL's serialization failures; a lost connection only before
the COMMIT was sent. Bounded, the whole transaction, one audit row.

The multi-node conflicts themselves run in tests/galera against a real cluster. A
single server cannot refuse a COMMIT for certification, so the API tests here make
the driver's COMMIT fail with the error Galera sends (MariaDB, PostgreSQL); the
decorator's rules are checked with the errors SQLAlchemy raises, on every backend.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from app import db
from app.db import ATTEMPTS, open_session, retried
from app.metrics import TRANSACTION_RETRIES
from app.tables import Domain
from tests.backends import BACKEND
from tests.helpers import sql


class Orig(Exception):
    """What a driver raises: MariaDB's (errno, message) or PostgreSQL's sqlstate."""

    def __init__(self, code: int | str, message: str = "refused") -> None:
        super().__init__(code, message)
        if isinstance(code, str):
            self.sqlstate = code


def error(code: int | str, *, invalidated: bool = False) -> DBAPIError:
    return OperationalError("COMMIT", {}, Orig(code), connection_invalidated=invalidated)


def retries(reason: str) -> float:
    return TRANSACTION_RETRIES.labels(reason)._value.get()  # type: ignore[attr-defined]


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with open_session(engine, write=True) as session:
        yield session


def failing(*errors: DBAPIError, commit_sent: bool = False) -> tuple[Callable[..., str], list[int]]:
    """A transaction that raises `errors` on its first runs, then answers "done"."""
    runs: list[int] = []

    def transaction(session: Session) -> str:
        runs.append(1)
        if len(runs) <= len(errors):
            if commit_sent:
                db._commit_sent.set(True)
            raise errors[len(runs) - 1]
        return "done"

    return transaction, runs


@pytest.mark.parametrize(
    ("code", "reason"),
    [(1213, "deadlock"), (1205, "lock-wait-timeout"), (1020, "record-changed"),
     ("40001", "serialization-failure"), ("40P01", "deadlock")],
)  # fmt: skip
def test_retried_refused_transaction_runs_again_whole(
    session: Session, code: int | str, reason: str
) -> None:
    transaction, runs = failing(error(code), error(code), commit_sent=True)
    before = retries(reason)
    assert retried(transaction)(session) == "done"
    assert len(runs) == 3
    assert retries(reason) == before + 2


def test_retried_gives_up_after_the_last_attempt(session: Session) -> None:
    transaction, runs = failing(*[error(1213)] * ATTEMPTS)
    with pytest.raises(OperationalError):
        retried(transaction)(session)
    assert len(runs) == ATTEMPTS


@pytest.mark.parametrize("code", [1062, 1146, "23505", "42501"])
def test_retried_other_errors_run_once(session: Session, code: int | str) -> None:
    transaction, runs = failing(error(code))
    with pytest.raises(OperationalError):
        retried(transaction)(session)
    assert runs == [1]


def test_retried_lost_connection_before_commit_runs_again(session: Session) -> None:
    transaction, runs = failing(error(2013, invalidated=True))
    before = retries("disconnect")
    assert retried(transaction)(session) == "done"
    assert len(runs) == 2 and retries("disconnect") == before + 1


@pytest.mark.parametrize("code", [2013, 1047])
def test_retried_lost_commit_answer_is_not_run_again(session: Session, code: int) -> None:
    # The COMMIT may have been applied: a second run would apply the change twice.
    transaction, runs = failing(error(code, invalidated=code == 2013), commit_sent=True)
    with pytest.raises(OperationalError):
        retried(transaction)(session)
    assert runs == [1]


def test_retried_node_not_ready_before_commit_runs_again(session: Session) -> None:
    transaction, runs = failing(error(1047))
    assert retried(transaction)(session) == "done"
    assert len(runs) == 2


def test_retried_inner_transaction_leaves_the_retry_to_the_outer(session: Session) -> None:
    inner, inner_runs = failing(error(1213))

    @retried
    def outer(session: Session) -> str:
        return retried(inner)(session)

    assert outer(session) == "done"
    assert len(inner_runs) == 2  # one failure, raised through the inner, run again by the outer


def test_retried_with_uncommitted_changes_runs_once(session: Session) -> None:
    # A rollback would lose what the caller added before: no second run without it.
    session.add(Domain(name="pending.example"))
    transaction, runs = failing(error(1213))
    with pytest.raises(OperationalError):
        retried(transaction)(session)
    assert runs == [1]
    session.rollback()


# ---------------------------------------------------------------- through the API


@contextmanager
def commits_refused(
    app: FastAPI, client_headers: Any, times: int, orig: Exception
) -> Iterator[list[int]]:
    """The driver's COMMIT fails `times` times with `orig`, as a Galera node refuses a
    write set that lost certification; then it commits for real."""
    dialect = app.state.engine.dialect
    real = dialect.do_commit
    # The key's last_used_at write (once a minute) is not what these tests count.
    with TestClient(app, headers=dict(client_headers)) as warm:
        assert warm.get("/domains").status_code == 200
    calls: list[int] = []

    def do_commit(dbapi_connection: Any) -> None:
        calls.append(1)
        if len(calls) <= times:
            dbapi_connection.rollback()  # what the server did with the transaction
            raise orig
        real(dbapi_connection)

    dialect.do_commit = do_commit
    try:
        yield calls
    finally:
        dialect.do_commit = real


def certification_failure() -> Exception:
    if BACKEND == "mariadb":
        import pymysql

        return pymysql.err.OperationalError(
            1213, "Deadlock found when trying to get lock; try restarting transaction"
        )
    import psycopg

    return psycopg.errors.SerializationFailure("could not serialize access")


needs_server = pytest.mark.skipif(
    BACKEND == "sqlite", reason="SQLite's errors carry no code; it takes its write lock first"
)


@needs_server
def test_commit_refused_once_answers_201_with_one_audit_row(
    app: FastAPI, client: TestClient, engine: Engine
) -> None:
    with commits_refused(app, client.headers, 1, certification_failure()) as calls:
        response = client.post("/domains", json={"name": "retried.example"})
    assert response.status_code == 201, response.text
    assert len(calls) == 2
    assert sql(engine, "SELECT name FROM virtual_domains") == [("retried.example",)]
    assert sql(
        engine, "SELECT outcome, status FROM mailprov_audit WHERE action = 'create_domain'"
    ) == [("success", 201)]


@needs_server
def test_alias_edit_refused_once_commits_once(
    app: FastAPI, client: TestClient, engine: Engine
) -> None:
    assert client.post("/domains", json={"name": "graph.example"}).status_code == 201
    body = {"source": "a@graph.example", "destinations": ["x@ext.example", "y@ext.example"]}
    before = sql(engine, "SELECT generation FROM mailprov_locks")
    with commits_refused(app, client.headers, 2, certification_failure()):
        response = client.post("/aliases", json=body)
    assert response.status_code == 201, response.text
    assert len(sql(engine, "SELECT id FROM virtual_aliases")) == 2
    # The lock row is written by the one run that committed.
    assert sql(engine, "SELECT generation FROM mailprov_locks") == [(before[0][0] + 1,)]
    assert sql(engine, "SELECT outcome FROM mailprov_audit WHERE action = 'create_alias'") == [
        ("success",)
    ]


@needs_server
def test_commit_refused_every_time_answers_503_and_changes_nothing(
    app: FastAPI, client: TestClient, engine: Engine
) -> None:
    with commits_refused(app, client.headers, ATTEMPTS, certification_failure()) as calls:
        response = client.post("/domains", json={"name": "refused.example"})
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert len(calls) == ATTEMPTS + 1  # and the refusal's own audit entry, committed
    assert sql(engine, "SELECT name FROM virtual_domains") == []
    # One audit row: the refusal, in a transaction of its own.
    assert sql(
        engine, "SELECT outcome, status FROM mailprov_audit WHERE action = 'create_domain'"
    ) == [("database-unavailable", 503)]


def test_alias_change_writes_the_lock_row(client: TestClient, engine: Engine) -> None:
    (before,) = sql(engine, "SELECT generation FROM mailprov_locks WHERE name = 'alias-graph'")
    assert client.post("/domains", json={"name": "lock.example"}).status_code == 201
    body = {"source": "a@lock.example", "destinations": ["x@ext.example"]}
    assert client.post("/aliases", json=body).status_code == 201
    assert client.delete("/aliases/a@lock.example").status_code == 200
    # Written, not only selected: a Galera cluster certifies writes only.
    assert sql(engine, "SELECT generation FROM mailprov_locks WHERE name = 'alias-graph'") == [
        (before[0] + 2,)
    ]
