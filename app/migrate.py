"""Running Alembic from the service, and adopting an existing ISPmail database.

A database made by hand from the guide's SQL has the three tables but no
``alembic_version``: it is checked against the contract, stamped at the
baseline (which would have created exactly those tables) and then upgraded,
without any row changing.
"""

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Connection, Engine, Integer, String, inspect, text

# Alembic is imported where it is used: the service's workers never load it (10 MB
# each); they only compare the database's version with SCHEMA_HEAD.
if TYPE_CHECKING:
    from alembic.config import Config

# Beside the package in a checkout; an installed copy (the Docker image) names it.
MIGRATIONS = Path(
    os.environ.get("MAILPROV_MIGRATIONS_DIR", Path(__file__).resolve().parent.parent / "migrations")
)
BASELINE = "0001"
# The newest revision in migrations/versions (tests/test_migrations.py holds them equal).
SCHEMA_HEAD = "0007"

# Contract columns: name -> (type, minimum length for strings).
CONTRACT: dict[str, dict[str, tuple[type, int]]] = {
    "virtual_domains": {"id": (Integer, 0), "name": (String, 50)},
    "virtual_users": {
        "id": (Integer, 0),
        "domain_id": (Integer, 0),
        "email": (String, 100),
        "password": (String, 150),
        "quota": (Integer, 0),
    },
    "virtual_aliases": {
        "id": (Integer, 0),
        "domain_id": (Integer, 0),
        "source": (String, 100),
        "destination": (String, 100),
    },
}


class MigrationRefused(RuntimeError):
    """A migration found data or schema it must not touch; nothing was changed."""


class AdoptionError(MigrationRefused):
    """The database has ISPmail tables that do not match the contract."""


def refuse_to_drop_rows(bind: Connection) -> None:
    """These tables are what Postfix and Dovecot read: never drop rows by downgrading."""
    for table in ("virtual_aliases", "virtual_users", "virtual_domains"):
        if bind.execute(text(f"SELECT 1 FROM {table} LIMIT 1")).first() is not None:
            raise MigrationRefused(f"{table} has rows; refusing to drop the ISPmail tables")


def alembic_config(engine: Engine) -> "Config":
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


@lru_cache
def schema_head() -> str:
    """The head revision, as Alembic reads it from the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def _contract_problems(engine: Engine) -> list[str]:
    problems = []
    inspector = inspect(engine)
    for table, columns in CONTRACT.items():
        found = {c["name"]: c["type"] for c in inspector.get_columns(table)}
        for name, (kind, length) in columns.items():
            column_type = found.get(name)
            if column_type is None:
                problems.append(f"{table}.{name} is missing")
            elif kind is Integer and not isinstance(column_type, Integer | BigInteger):
                problems.append(f"{table}.{name} is {column_type}, expected an integer")
            elif kind is String and (
                not isinstance(column_type, String) or (column_type.length or 0) < length
            ):
                problems.append(f"{table}.{name} is {column_type}, expected varchar({length})")
        if "domain_id" in columns:
            cascading = [
                fk
                for fk in inspector.get_foreign_keys(table)
                if fk["constrained_columns"] == ["domain_id"]
                and fk["referred_table"] == "virtual_domains"
                and (fk.get("options") or {}).get("ondelete", "").upper() == "CASCADE"
            ]
            if not cascading:
                problems.append(
                    f"{table}.domain_id lacks its foreign key to virtual_domains(id) "
                    "ON DELETE CASCADE"
                )
    unique_sets: set[tuple[str | None, ...]] = {
        tuple(c["column_names"]) for c in inspector.get_unique_constraints("virtual_users")
    }
    unique_sets |= {
        tuple(i["column_names"]) for i in inspector.get_indexes("virtual_users") if i["unique"]
    }
    if ("email",) not in unique_sets:
        problems.append("virtual_users.email is not UNIQUE")
    return problems


def migrate(engine: Engine) -> str:
    """Bring the schema to head; return what was done, for the operator."""
    from alembic import command

    config = alembic_config(engine)
    tables = set(inspect(engine).get_table_names())
    ispmail = set(CONTRACT) & tables
    adopted = False
    if "alembic_version" not in tables and ispmail:
        if ispmail != set(CONTRACT):
            missing = ", ".join(sorted(set(CONTRACT) - ispmail))
            raise AdoptionError(f"found some ISPmail tables but not {missing}; refusing to guess")
        problems = _contract_problems(engine)
        if problems:
            raise AdoptionError("existing ISPmail tables differ: " + "; ".join(problems))
        command.stamp(config, BASELINE)
        adopted = True
    command.upgrade(config, "head")
    action = "adopted existing ISPmail tables, then migrated" if adopted else "migrated"
    return f"{action} to {schema_head()}"
