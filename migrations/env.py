"""Alembic environment: runs against the engine mailprov hands over (app.migrate)."""

from alembic import context
from sqlmodel import SQLModel

import app.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from app.config import Settings
from app.db import create_db_engine

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
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
