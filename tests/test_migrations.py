"""Migrations: the schema they create, adopting a hand-made ISPmail database, refusals.

Every test gets an empty database of its own (``fresh_database_url``) on the backend
MAILPROV_TEST_BACKEND selects. A "guide database" is made by hand from
``tests/sql/ispmail_guide_<backend>.sql``: the ISPmail guide's CREATE TABLE statements
(verbatim for MariaDB, the same tables in SQLite's and PostgreSQL's words) followed by
rows inserted the guide's way.
"""

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import BigInteger, Engine, Integer, String, inspect, text
from sqlalchemy.exc import IntegrityError

from app.config import Settings
from app.db import create_db_engine
from app.main import create_app
from app.migrate import (
    BASELINE,
    AdoptionError,
    MigrationRefused,
    alembic_config,
    migrate,
    schema_head,
)
from tests.backends import BACKEND
from tests.helpers import TEST_COST, bearer, make_key

ISPMAIL = ("virtual_domains", "virtual_users", "virtual_aliases")
MAILPROV_TABLES = (
    "mailprov_locks",
    "mailprov_api_keys",
    "mailprov_auth_failures",
    "mailprov_audit",
    "mailprov_idempotency",
    "mailprov_send_rate",
    "mailprov_dkim_keys",
)
GUIDE_SQL = Path(__file__).parent / "sql" / f"ispmail_guide_{BACKEND}.sql"
MAILPROV_CLI = Path(sys.executable).parent / "mailprov"

# What 0002 adds beside the contract: (table, index name) -> (columns, unique).
MAILPROV_INDEXES = {
    ("virtual_domains", "uq_virtual_domains_name"): (("name",), True),
    ("virtual_aliases", "uq_virtual_aliases_source_destination"): (("source", "destination"), True),
    ("virtual_users", "ix_virtual_users_domain_id_email"): (("domain_id", "email"), False),
    ("virtual_aliases", "ix_virtual_aliases_domain_id_source"): (("domain_id", "source"), False),
    ("virtual_aliases", "ix_virtual_aliases_destination"): (("destination",), False),
}

# The contract (docs/contract.md): column -> (type, varchar length or None).
CONTRACT: dict[str, dict[str, tuple[type, int | None]]] = {
    "virtual_domains": {"id": (Integer, None), "name": (String, 50)},
    "virtual_users": {
        "id": (Integer, None),
        "domain_id": (Integer, None),
        "email": (String, 100),
        "password": (String, 150),
        "quota": (BigInteger, None),
    },
    "virtual_aliases": {
        "id": (Integer, None),
        "domain_id": (Integer, None),
        "source": (String, 100),
        "destination": (String, 100),
    },
}

# ---------------------------------------------------------------- helpers


@pytest.fixture
def fresh_engine(fresh_database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(fresh_database_url)
    yield engine
    engine.dispose()


def guide_statements() -> list[str]:
    lines = [
        line
        for line in GUIDE_SQL.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("--")
    ]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def guide_schema() -> list[str]:
    return [s for s in guide_statements() if s.upper().startswith("CREATE TABLE")]


def guide_rows(tables: tuple[str, ...] = ISPMAIL) -> list[str]:
    """The guide's INSERT/DELETE statements that touch only ``tables``."""
    wanted = []
    for statement in guide_statements():
        if statement.upper().startswith("CREATE TABLE"):
            continue
        target = re.match(r"(?:INSERT INTO|DELETE FROM) (\w+)", statement)
        assert target is not None, statement
        if target.group(1) in tables:
            wanted.append(statement)
    return wanted


def schema_of(table: str) -> str:
    (statement,) = [s for s in guide_schema() if re.search(rf"\b{table}\b`? \(", s)]
    return statement


def run_sql(engine: Engine, statements: list[str]) -> None:
    """Run hand-written SQL as an operator would (no bind parameters)."""
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def make_guide_database(engine: Engine, extra: tuple[str, ...] = ()) -> None:
    run_sql(engine, [*guide_schema(), *guide_rows(), *extra])


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def rows(engine: Engine, tables: tuple[str, ...] = ISPMAIL) -> dict[str, list[tuple[Any, ...]]]:
    """Full SELECT * ORDER BY id of each table, with the column names first."""
    found = table_names(engine)
    snapshot = {}
    with engine.connect() as conn:
        for table in tables:
            if table in found:
                result = conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))
                snapshot[table] = [tuple(result.keys()), *(tuple(row) for row in result)]
    return snapshot


def lookup(engine: Engine, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(statement), params)]


def version(engine: Engine) -> list[str]:
    return [row[0] for row in lookup(engine, "SELECT version_num FROM alembic_version")]


def indexes(engine: Engine, table: str) -> dict[str, tuple[tuple[str, ...], bool]]:
    return {
        str(ix["name"]): (tuple(c for c in ix["column_names"] if c is not None), bool(ix["unique"]))
        for ix in inspect(engine).get_indexes(table)
    }


def unique_column_sets(engine: Engine, table: str) -> set[tuple[str, ...]]:
    insp = inspect(engine)
    found = {tuple(uc["column_names"]) for uc in insp.get_unique_constraints(table)}
    found |= {cols for cols, unique in indexes(engine, table).values() if unique}
    return found


def columns(engine: Engine, table: str) -> list[tuple[Any, ...]]:
    return [
        (c["name"], repr(c["type"]), c["nullable"], c.get("default"))
        for c in inspect(engine).get_columns(table)
    ]


def definition(engine: Engine, table: str) -> dict[str, Any]:
    """A table's columns, keys, constraints and options (engine, charset): all but indexes."""
    insp = inspect(engine)
    return {
        "options": insp.get_table_options(table),
        "columns": columns(engine, table),
        "pk": insp.get_pk_constraint(table)["constrained_columns"],
        "fks": sorted(
            (
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                tuple(fk["referred_columns"]),
                fk["options"].get("ondelete"),
            )
            for fk in insp.get_foreign_keys(table)
        ),
        # MariaDB reports unique indexes as unique constraints too: 0002's are indexes.
        "uniques": sorted(
            (uc["name"], tuple(uc["column_names"]))
            for uc in insp.get_unique_constraints(table)
            if (table, uc["name"]) not in MAILPROV_INDEXES
        ),
    }


def schema(engine: Engine) -> dict[str, Any]:
    return {
        table: {**definition(engine, table), "indexes": indexes(engine, table)}
        for table in sorted(table_names(engine))
    }


def fingerprint(engine: Engine) -> tuple[dict[str, Any], dict[str, Any]]:
    """Schema and every row of every table: equal fingerprints mean nothing changed."""
    names = table_names(engine)
    everything: dict[str, Any] = rows(engine)
    if "mailprov_locks" in names:
        everything["mailprov_locks"] = lookup(engine, "SELECT name FROM mailprov_locks")
    if "alembic_version" in names:
        everything["alembic_version"] = version(engine)
    return schema(engine), everything


def without(snapshot: dict[str, list[tuple[Any, ...]]], table: str, row_id: int) -> dict[str, Any]:
    header, *data = snapshot[table]
    return {**snapshot, table: [header, *(row for row in data if row[0] != row_id)]}


def run_cli(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROV_")}
    env["MAILPROV_DATABASE_URL"] = url
    return subprocess.run(
        [str(MAILPROV_CLI), "migrate"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_contract_schema(engine: Engine) -> None:
    insp = inspect(engine)
    for table, expected in CONTRACT.items():
        found = {c["name"]: c for c in insp.get_columns(table)}
        assert set(found) == set(expected), table
        for name, (kind, length) in expected.items():
            column = found[name]
            assert isinstance(column["type"], kind), (table, name, column["type"])
            if kind is Integer:
                assert not isinstance(column["type"], BigInteger), (table, name, column["type"])
            if length is not None:
                assert column["type"].length == length, (table, name, column["type"])
            assert column["nullable"] is False, (table, name)
        assert insp.get_pk_constraint(table)["constrained_columns"] == ["id"], table
    quota = {c["name"]: c for c in insp.get_columns("virtual_users")}["quota"]
    assert str(quota.get("default")).strip("'()") == "0", quota
    assert ("email",) in unique_column_sets(engine, "virtual_users")
    for table in ("virtual_users", "virtual_aliases"):
        assert [
            (
                fk["constrained_columns"],
                fk["referred_table"],
                fk["referred_columns"],
                fk["options"].get("ondelete"),
            )
            for fk in insp.get_foreign_keys(table)
        ] == [(["domain_id"], "virtual_domains", ["id"], "CASCADE")], table
    if BACKEND == "mariadb":
        for table in ISPMAIL:
            assert insp.get_table_options(table)["mysql_engine"] == "InnoDB", table


def assert_mailprov_schema(engine: Engine) -> None:
    for (table, name), expected in MAILPROV_INDEXES.items():
        assert indexes(engine, table).get(name) == expected, (table, name)
    insp = inspect(engine)
    lock_column, generation = insp.get_columns("mailprov_locks")
    assert lock_column["name"] == "name"
    assert isinstance(lock_column["type"], String) and lock_column["type"].length == 64
    # Written by every holder of the lock (a Galera cluster certifies writes only).
    assert generation["name"] == "generation" and not generation["nullable"]
    assert insp.get_pk_constraint("mailprov_locks")["constrained_columns"] == ["name"]
    assert lookup(engine, "SELECT name FROM mailprov_locks") == [("alias-graph",)]
    assert version(engine) == [schema_head()]


# ---------------------------------------------------------------- empty database


def test_schema_head_constant_is_the_newest_migration() -> None:
    """The service compares the database with SCHEMA_HEAD without loading Alembic."""
    from app.migrate import SCHEMA_HEAD

    assert schema_head() == SCHEMA_HEAD


def test_migrate_empty_database_creates_contract_schema(fresh_engine: Engine) -> None:
    assert migrate(fresh_engine) == f"migrated to {schema_head()}"

    assert table_names(fresh_engine) == {*ISPMAIL, *MAILPROV_TABLES, "alembic_version"}
    assert_contract_schema(fresh_engine)
    assert_mailprov_schema(fresh_engine)


def test_migrate_empty_database_tables_behave_as_contract(fresh_engine: Engine) -> None:
    migrate(fresh_engine)
    run_sql(fresh_engine, guide_rows())
    # Ids are generated, quota defaults to 0 (john was inserted without one).
    assert lookup(
        fresh_engine, "SELECT id, quota FROM virtual_users WHERE email='john@example.org'"
    ) == [(1, 0)]
    with pytest.raises(IntegrityError), fresh_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO virtual_users (domain_id, email, password) "
                "SELECT domain_id, email, password FROM virtual_users "
                "WHERE email='john@example.org'"
            )
        )
    with pytest.raises(IntegrityError), fresh_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO virtual_users (domain_id, email, password) "
                "VALUES (9999, 'x@nowhere.example', 'x')"
            )
        )
    with fresh_engine.begin() as conn:
        conn.execute(text("DELETE FROM virtual_domains WHERE name='example.org'"))
    # ON DELETE CASCADE removed the domain's users and aliases, and only those.
    assert lookup(fresh_engine, "SELECT email FROM virtual_users ORDER BY email") == [
        ("bob@example.com",),
        ("info@xn--bcher-kva.de",),
    ]
    assert lookup(fresh_engine, "SELECT DISTINCT source FROM virtual_aliases ORDER BY source") == [
        ("kontakt@xn--bcher-kva.de",),
        ("postmaster@example.com",),
        ("sales@example.com",),
    ]


def test_migrate_twice_second_run_is_noop(fresh_engine: Engine) -> None:
    migrate(fresh_engine)
    run_sql(fresh_engine, guide_rows())
    before = fingerprint(fresh_engine)

    assert migrate(fresh_engine) == f"migrated to {schema_head()}"

    assert fingerprint(fresh_engine) == before


# ---------------------------------------------------------------- adoption


def test_migrate_guide_database_adopts_rows_unchanged(fresh_engine: Engine) -> None:
    make_guide_database(fresh_engine)
    assert "alembic_version" not in table_names(fresh_engine)
    before_rows = rows(fresh_engine)
    before_tables = {table: definition(fresh_engine, table) for table in ISPMAIL}
    before_indexes = {table: indexes(fresh_engine, table) for table in ISPMAIL}
    assert len(before_rows["virtual_aliases"]) == 1 + 11

    result = migrate(fresh_engine)

    assert result == f"adopted existing ISPmail tables, then migrated to {schema_head()}"
    assert rows(fresh_engine) == before_rows
    assert table_names(fresh_engine) == {*ISPMAIL, *MAILPROV_TABLES, "alembic_version"}
    for table in ISPMAIL:
        # Not one column, key or constraint of the guide's tables changed: 0002 only adds indexes.
        assert definition(fresh_engine, table) == before_tables[table], table
        added = {
            name: found
            for name, found in indexes(fresh_engine, table).items()
            if name not in before_indexes[table]
        }
        assert added == {n: v for (t, n), v in MAILPROV_INDEXES.items() if t == table}, table
        gone = before_indexes[table].items() - indexes(fresh_engine, table).items()
        if BACKEND == "mariadb" and table != "virtual_domains":
            # InnoDB drops the index it made for the foreign key once 0002's
            # (domain_id, ...) index can serve it (0002's downgrade gives it back).
            assert gone == {("domain_id", (("domain_id",), False))}, table
        else:
            assert gone == set(), table
    assert_mailprov_schema(fresh_engine)

    # Adopted once: the next run is a plain, empty migration.
    assert migrate(fresh_engine) == f"migrated to {schema_head()}"
    assert rows(fresh_engine) == before_rows


def test_serve_api_on_adopted_database(fresh_database_url: str, fresh_engine: Engine) -> None:
    make_guide_database(fresh_engine)
    migrate(fresh_engine)
    before = rows(fresh_engine)
    app = create_app(Settings(DATABASE_URL=fresh_database_url, BCRYPT_COST=TEST_COST))
    key = make_key(fresh_engine, name="adopter")

    with TestClient(app, headers=bearer(key)) as client:
        example_org = client.get("/domains/example.org")
        assert example_org.status_code == 200
        assert example_org.json() == {
            "name": "example.org",
            "name_unicode": "example.org",
            "mailboxes": 2,
            "aliases": 4,  # jack@, info@, jane.doe@ and the catch-all @example.org
            "maildir_root": "/var/vmail/example.org",
        }
        idn = client.get("/domains/bücher.de").json()
        assert (idn["name"], idn["mailboxes"], idn["aliases"]) == ("xn--bcher-kva.de", 1, 1)
        assert client.get("/domains/example.net").json()["mailboxes"] == 0
        assert client.get("/domains/old.example").status_code == 404
        assert client.get("/domains").json()["total"] == 4

        jane = client.get("/mailboxes/jane@example.org")
        assert jane.status_code == 200
        assert jane.json() == {
            "address": "jane@example.org",
            "domain": "example.org",
            "quota": 1073741824,
            "maildir": "/var/vmail/example.org/jane",
        }
        assert client.get("/mailboxes/bob@example.com").json()["quota"] == 5368709120
        assert client.get("/mailboxes/leaver@example.org").status_code == 404

        info = client.get("/aliases/info@example.org").json()
        assert (info["catch_all"], info["destinations"]) == (
            False,
            ["jane@example.org", "john@example.org"],
        )
        catch_all = client.get("/aliases/@example.org").json()
        assert (catch_all["catch_all"], catch_all["destinations"]) == (True, ["john@example.org"])
        assert client.get("/aliases/jane.doe@example.org").json()["destinations"] == [
            "jane.private@freemail.example",
            "jane@example.org",  # an external and an internal one
        ]

        created = client.post(
            "/mailboxes", json={"address": "carol@example.com", "password": "pw-carol"}
        )
        assert created.status_code == 201, created.text
        alias = client.post(
            "/aliases",
            json={
                "source": "team@example.com",
                "destinations": ["carol@example.com", "bob@example.com"],
            },
        )
        assert alias.status_code == 201, alias.text
        assert client.post("/domains", json={"name": "example.com"}).status_code == 409
        assert (
            client.post(
                "/mailboxes", json={"address": "john@example.org", "password": "pw"}
            ).status_code
            == 409
        )

    # Dovecot's and Postfix's lookups see the new rows, tied to the existing domain's id.
    (example_com_id,) = lookup(
        fresh_engine, "SELECT id FROM virtual_domains WHERE name='example.com'"
    )[0]
    ((domain_id, password),) = lookup(
        fresh_engine,
        "SELECT domain_id, password FROM virtual_users WHERE email='carol@example.com'",
    )
    assert domain_id == example_com_id
    assert password.startswith("{BLF-CRYPT}$2y$04$")
    assert lookup(
        fresh_engine,
        "SELECT destination FROM virtual_aliases WHERE source='team@example.com' "
        "ORDER BY destination",
    ) == [("bob@example.com",), ("carol@example.com",)]
    # The rows that were there before are untouched; new rows come after them.
    after = rows(fresh_engine)
    for table in ISPMAIL:
        assert after[table][: len(before[table])] == before[table], table


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "present",
    [
        ("virtual_domains",),
        ("virtual_domains", "virtual_users"),
        ("virtual_domains", "virtual_aliases"),
    ],
    ids=["domains-only", "no-aliases", "no-users"],
)
def test_migrate_partial_ispmail_tables_refused(
    fresh_engine: Engine, present: tuple[str, ...]
) -> None:
    run_sql(fresh_engine, [*(schema_of(t) for t in present), *guide_rows(present)])
    before = fingerprint(fresh_engine)

    with pytest.raises(AdoptionError) as refused:
        migrate(fresh_engine)

    for table in ISPMAIL:
        assert (table in str(refused.value)) is (table not in present), str(refused.value)
    assert table_names(fresh_engine) == set(present)
    assert fingerprint(fresh_engine) == before


@pytest.mark.parametrize(
    ("pattern", "replacement", "problem"),
    [
        (r"(`?password`? varchar)\(150\)", r"\1(50)", "virtual_users.password is VARCHAR(50"),
        (r",\s*`?quota`? bigint(\(11\))? NOT NULL DEFAULT 0", "", "virtual_users.quota is missing"),
        (
            r"(`?destination`? varchar)\(100\)",
            r"\1(64)",
            "virtual_aliases.destination is VARCHAR(64",
        ),
        (r"(`?name`? varchar)\(50\)", r"\1(40)", "virtual_domains.name is VARCHAR(40"),
        (
            r",\s*UNIQUE (?:KEY `email` )?\(`?email`?\)| UNIQUE(?=,)",
            "",
            "virtual_users.email is not UNIQUE",
        ),
        (
            r" ON DELETE CASCADE",
            "",
            "virtual_users.domain_id lacks its foreign key to virtual_domains(id) "
            "ON DELETE CASCADE",
        ),
    ],
    ids=[
        "password-too-short",
        "quota-missing",
        "destination-too-short",
        "name-too-short",
        "email-not-unique",
        "no-cascade",
    ],
)
def test_migrate_nonconforming_column_refused(
    fresh_engine: Engine, pattern: str, replacement: str, problem: str
) -> None:
    ddl = []
    for statement in guide_schema():
        changed, count = re.subn(pattern, replacement, statement)
        ddl.append(changed)
        assert count <= 1
    assert ddl != guide_schema(), "the test's DDL edit did not apply"
    # Rows that fit the changed tables: the domains and aliases (no user has a short hash).
    run_sql(fresh_engine, [*ddl, *guide_rows(("virtual_domains", "virtual_aliases"))])
    before = fingerprint(fresh_engine)

    with pytest.raises(AdoptionError, match=re.escape(problem)) as refused:
        migrate(fresh_engine)

    assert str(refused.value).startswith("existing ISPmail tables differ: ")
    assert fingerprint(fresh_engine) == before
    assert "alembic_version" not in table_names(fresh_engine)


DUPLICATE_DOMAIN = "INSERT INTO virtual_domains (name) VALUES ('example.com')"
DUPLICATE_ALIAS = (
    "INSERT INTO virtual_aliases (domain_id, source, destination) VALUES "
    "((SELECT id FROM virtual_domains WHERE name='example.org'), "
    "'info@example.org', 'jane@example.org')"
)


@pytest.mark.parametrize(
    ("duplicate", "table", "message"),
    [
        (
            DUPLICATE_DOMAIN,
            "virtual_domains",
            "virtual_domains has duplicate (name) rows: example.com.",
        ),
        (
            DUPLICATE_ALIAS,
            "virtual_aliases",
            "virtual_aliases has duplicate (source, destination) rows: "
            "info@example.org, jane@example.org.",
        ),
    ],
    ids=["domain-name", "alias-pair"],
)
def test_migrate_duplicate_rows_refused(
    fresh_engine: Engine, duplicate: str, table: str, message: str
) -> None:
    make_guide_database(fresh_engine, extra=(duplicate,))
    before_rows = rows(fresh_engine)
    before_tables = {t: definition(fresh_engine, t) for t in ISPMAIL}
    before_indexes = {t: indexes(fresh_engine, t) for t in ISPMAIL}

    with pytest.raises(MigrationRefused, match=re.escape(message)) as refused:
        migrate(fresh_engine)

    assert not isinstance(refused.value, AdoptionError)
    assert "no row was changed" in str(refused.value)
    assert rows(fresh_engine) == before_rows
    for t in ISPMAIL:
        assert definition(fresh_engine, t) == before_tables[t], t
        assert indexes(fresh_engine, t) == before_indexes[t], t
    # On every backend (DDL transactional or not) the refusal comes before any DDL of
    # 0002: the database is left adopted at the baseline, which describes it exactly.
    assert table_names(fresh_engine) == {*ISPMAIL, "alembic_version"}
    assert version(fresh_engine) == [BASELINE]

    # The operator removes the duplicate by hand and migrates again.
    duplicate_id = before_rows[table][-1][0]
    run_sql(fresh_engine, [f"DELETE FROM {table} WHERE id = {duplicate_id}"])
    assert migrate(fresh_engine) == f"migrated to {schema_head()}"
    assert rows(fresh_engine) == without(before_rows, table, duplicate_id)
    assert_mailprov_schema(fresh_engine)


# ---------------------------------------------------------------- downgrade


def test_downgrade_with_rows_keeps_rows(fresh_engine: Engine) -> None:
    migrate(fresh_engine)
    run_sql(fresh_engine, guide_rows())
    before_rows = rows(fresh_engine)
    before_tables = {t: definition(fresh_engine, t) for t in ISPMAIL}

    with pytest.raises(MigrationRefused):
        command.downgrade(alembic_config(fresh_engine), "base")

    assert rows(fresh_engine) == before_rows
    for table in ISPMAIL:
        assert definition(fresh_engine, table) == before_tables[table], table


def test_downgrade_with_rows_refused(fresh_engine: Engine) -> None:
    migrate(fresh_engine)
    run_sql(fresh_engine, guide_rows())

    with pytest.raises(
        MigrationRefused, match="virtual_aliases has rows; refusing to drop the ISPmail tables"
    ):
        command.downgrade(alembic_config(fresh_engine), "base")


def test_downgrade_with_rows_drops_nothing(fresh_engine: Engine) -> None:
    migrate(fresh_engine)
    run_sql(fresh_engine, guide_rows())
    before = fingerprint(fresh_engine)

    with pytest.raises(MigrationRefused, match="has rows"):
        command.downgrade(alembic_config(fresh_engine), "base")

    assert fingerprint(fresh_engine) == before


def test_downgrade_empty_database_removes_schema(fresh_engine: Engine) -> None:
    migrate(fresh_engine)

    command.downgrade(alembic_config(fresh_engine), "base")

    # Alembic keeps its (now empty) bookkeeping table; everything mailprov created is gone.
    assert table_names(fresh_engine) == {"alembic_version"}
    assert version(fresh_engine) == []
    # And the way back up works.
    assert migrate(fresh_engine) == f"migrated to {schema_head()}"
    assert_contract_schema(fresh_engine)
    assert_mailprov_schema(fresh_engine)


# ---------------------------------------------------------------- the mailprov migrate command


@pytest.mark.slow  # runs the CLI
def test_cli_migrate_empty_database_exits_zero(
    fresh_database_url: str, fresh_engine: Engine, tmp_path: Path
) -> None:
    done = run_cli(fresh_database_url, tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stderr == f"mailprov: migrated to {schema_head()}\n"
    assert version(fresh_engine) == [schema_head()]


@pytest.mark.slow  # runs the CLI
def test_cli_migrate_partial_database_exits_nonzero(
    fresh_database_url: str, fresh_engine: Engine, tmp_path: Path
) -> None:
    run_sql(fresh_engine, [schema_of("virtual_domains"), *guide_rows(("virtual_domains",))])
    before = fingerprint(fresh_engine)

    done = run_cli(fresh_database_url, tmp_path)

    assert done.returncode != 0
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr == (
        "mailprov: cannot migrate: found some ISPmail tables but not virtual_aliases, "
        "virtual_users; refusing to guess\n"
    )
    assert fingerprint(fresh_engine) == before


@pytest.mark.slow  # runs the CLI
def test_cli_migrate_duplicate_rows_exits_nonzero(
    fresh_database_url: str, fresh_engine: Engine, tmp_path: Path
) -> None:
    make_guide_database(fresh_engine, extra=(DUPLICATE_DOMAIN,))
    before_rows = rows(fresh_engine)

    done = run_cli(fresh_database_url, tmp_path)

    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr == (
        "mailprov: cannot migrate: virtual_domains has duplicate (name) rows: example.com. "
        "Remove the duplicates by hand, then migrate again; no row was changed.\n"
    )
    assert rows(fresh_engine) == before_rows
