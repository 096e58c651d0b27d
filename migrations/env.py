"""Alembic environment: runs against the engine mailprov hands over (app.migrate)."""

from alembic import context
from sqlalchemy import inspect
from sqlmodel import SQLModel

import app.tables  # noqa: F401  (registers every table on SQLModel.metadata)
from app.config import Settings
from app.db import create_db_engine
from app.migrate import refuse_to_drop_rows

config = context.config
engine = config.attributes.get("engine") or create_db_engine(Settings().DATABASE_URL)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        compare_type=True,
        # SQLite rolls DDL back like PostgreSQL does (app.db starts transactions with
        # BEGIN): a refused migration then leaves nothing half-done. MariaDB cannot.
        transactional_ddl=connection.dialect.name != "mysql",
    )
    # "revision --autogenerate" and "check" only compare: they have no destination.
    if (
        "destination_rev" in context.get_context().opts
        and context.get_revision_argument() is None
        and "virtual_users" in inspect(connection).get_table_names()
    ):
        # On the way down to "base": MariaDB commits each DDL statement, so refuse
        # before any revision drops anything, not half-way down in 0001.
        refuse_to_drop_rows(connection)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
