"""The database servers the suite runs against, chosen by MAILPROV_TEST_BACKEND.

sqlite (default) needs nothing; mariadb and postgresql use the servers that
scripts/dbservers.sh makes sure of (root / postgres on 127.0.0.1). Each test
session gets databases of its own, created here and dropped at the end.
"""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

BACKEND = os.environ.get("MAILPROV_TEST_BACKEND", "sqlite")
SERVERS = {
    "mariadb": os.environ.get("MAILPROV_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/"),
    "postgresql": os.environ.get(
        "MAILPROV_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
}


@contextmanager
def scratch_database(tmp_dir: Path) -> Iterator[str]:
    """A new, empty database on the selected backend; its URL."""
    name = f"mailprov_test_{uuid.uuid4().hex[:12]}"
    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_dir / (name + '.db')}"
        return
    server = make_url(SERVERS[BACKEND])
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if BACKEND == "mariadb":
            conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        else:
            conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if BACKEND == "postgresql":
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()
