"""Engine and sessions.

Routes are plain ``def`` functions with sync sessions: FastAPI runs them in its
threadpool, so neither SQL nor bcrypt hashing ever blocks the event loop, and
the same code serves SQLite, MariaDB and PostgreSQL through well-kept sync
drivers (sqlite3, PyMySQL, psycopg 3).
"""

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlmodel import Session

# Session option that marks a transaction which will write.
WRITE_OPTION = "mailprov_write"


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
