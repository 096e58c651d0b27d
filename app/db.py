"""Engine and sessions.

Routes are plain ``def`` functions with sync sessions: FastAPI runs them in its
threadpool, so neither SQL nor bcrypt hashing ever blocks the event loop, and
the same code serves SQLite, MariaDB and PostgreSQL through well-kept sync
drivers (sqlite3, PyMySQL, psycopg 3).
"""

import functools
import logging
import random
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from app.metrics import TRANSACTION_RETRIES

logger = logging.getLogger("mailprov")

# Session option that marks a transaction which will write.
WRITE_OPTION = "mailprov_write"

P = ParamSpec("P")
T = TypeVar("T")

# A transaction refused only because of a concurrent one runs again, whole, up to this
# many times in all, after a random pause of up to 20, 40, 80 ... ms, at most 1 s ("full
# jitter": racers that collided do not collide again in step): about 2 s of pauses at
# worst on average. Then the error answers 503 with Retry-After. Ten, because thirty
# alias edits at once on three Galera nodes all write one lock row (the test suite).
ATTEMPTS = 10
BACKOFF_BASE = 0.02
BACKOFF_CAP = 1.0

# MariaDB errors after which the server has rolled the transaction back (or never ran
# it), whatever point it had reached, so running it again cannot apply anything twice:
RETRY_ALWAYS = {
    # ER_LOCK_DEADLOCK: an InnoDB deadlock; on Galera also a certification failure at
    # COMMIT (another node committed a write set touching the same rows first) and a
    # local transaction aborted by a replicated one ("brute-force abort").
    1213: "deadlock",
    # ER_LOCK_WAIT_TIMEOUT: InnoDB rolls back only the statement; we roll back the rest.
    1205: "lock-wait-timeout",
    # ER_CHECKREAD: "record has changed since last read" (innodb_snapshot_isolation).
    1020: "record-changed",
    # PostgreSQL: serialization_failure, deadlock_detected.
    "40001": "serialization-failure",
    "40P01": "deadlock",
}
# ... and those that are safe only before the COMMIT was sent: a COMMIT whose answer
# was lost may have been applied, and a second run would apply the change again.
RETRY_BEFORE_COMMIT = {
    # ER_UNKNOWN_COM_ERROR, Galera's "WSREP has not yet prepared node for application
    # use": the node is not in the primary component (joining, or cut off).
    1047: "node-not-ready",
}
_commit_sent: ContextVar[bool] = ContextVar("mailprov_commit_sent", default=False)
_in_transaction: ContextVar[bool] = ContextVar("mailprov_in_transaction", default=False)


@event.listens_for(Engine, "commit")
def _on_commit(_conn: Connection) -> None:
    # Fired just before the driver sends COMMIT: from here on, a lost connection leaves
    # the outcome unknown.
    _commit_sent.set(True)


def retry_reason(exc: DBAPIError) -> str | None:
    """Why ``exc`` allows running the whole transaction again, or None."""
    args = getattr(exc.orig, "args", ())
    # MariaDB's error number first (PyMySQL also gives 1213 the SQLSTATE 40001), else
    # PostgreSQL's SQLSTATE.
    code = args[0] if args and isinstance(args[0], int) else getattr(exc.orig, "sqlstate", None)
    if code in RETRY_ALWAYS:
        return RETRY_ALWAYS[code]
    if _commit_sent.get():
        return None
    if code in RETRY_BEFORE_COMMIT:
        return RETRY_BEFORE_COMMIT[code]
    if exc.connection_invalidated:
        # The connection broke mid-transaction (a database node killed, a proxy
        # restarted): the server rolls back what it had; a new connection may reach
        # another node.
        return "disconnect"
    return None


def retried(run: Callable[Concatenate[Session, P], T]) -> Callable[Concatenate[Session, P], T]:
    """Make ``run(session, ...)``, a whole transaction that ends in its own commit,
    run again from the start when the database refused it only because of a concurrent
    one (Galera's certification, a deadlock; see RETRY_ALWAYS), boundedly, with backoff.

    The transaction is rolled back before each new run, so nothing of a refused run
    stays, and hooks that add rows at commit (the audit entry) add them once per run
    that commits: exactly once. ``run`` must be the whole transaction: the session must
    hold no uncommitted change when it is called (it would be lost with the rollback;
    such a call runs once, unretried). Nested calls run inside the outer one's retry.
    SQLite never retries: it takes its write lock up front (BEGIN IMMEDIATE)."""

    @functools.wraps(run)
    def transaction(session: Session, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if _in_transaction.get() or session.new or session.dirty or session.deleted:
            return run(session, *args, **kwargs)
        outer = _in_transaction.set(True)
        try:
            for attempt in range(1, ATTEMPTS + 1):
                sent = _commit_sent.set(False)
                try:
                    return run(session, *args, **kwargs)
                except DBAPIError as exc:
                    reason = retry_reason(exc)
                    if reason is None or attempt == ATTEMPTS:
                        raise
                    session.rollback()
                    TRANSACTION_RETRIES.labels(reason).inc()
                    logger.info("%s: transaction run again (%s)", run.__name__, reason)
                    time.sleep(
                        random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))
                    )
                finally:
                    _commit_sent.reset(sent)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            _in_transaction.reset(outer)

    return transaction


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event (below) decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # The ISPmail contract relies on ON DELETE CASCADE; SQLite ignores it without this.
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL never corrupts the database; a power cut may lose the
            # last commits, not leave half of one. Spares an fsync per commit.
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front: two writers that both read first and
        # then try to upgrade would otherwise fail with "database is locked".
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def create_db_engine(
    url: str, *, connect_timeout: int = 5, pool_size: int = 5, read_timeout: int = 30
) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
    else:
        kwargs.update(
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_recycle=1800,
            pool_timeout=connect_timeout,
            # Row locks and re-reads inside one transaction must see what others committed.
            isolation_level="READ COMMITTED",
            connect_args={"connect_timeout": connect_timeout},
        )
        if backend == "mysql":
            # PyMySQL's connect_timeout covers only the TCP connect: without these a
            # server that accepts and never answers would hold a request forever.
            kwargs["connect_args"].update(
                charset="utf8mb4", read_timeout=read_timeout, write_timeout=read_timeout
            )
    engine = create_engine(parsed, **kwargs)
    if backend == "sqlite":
        _configure_sqlite(engine)
    return engine


def open_session(engine: Engine, *, write: bool = False) -> Session:
    """A session; ``write=True`` for one that will change rows (see ``WRITE_OPTION``)."""
    # Objects stay readable after commit: reading them must not open a new
    # transaction (and hold a pooled connection, or SQLite's write lock) until the
    # request ends.
    options = {WRITE_OPTION: True} if write else {}
    return Session(engine, execution_options=options, expire_on_commit=False)


@retried
def commit(session: Session) -> None:
    """Commit a transaction whose only change is what commit hooks add (an audit entry)."""
    session.commit()
