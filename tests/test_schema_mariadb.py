"""The schema `mailprov migrate` makes on MariaDB is the guide's, plus mailprov's own.

MariaDB part: two fresh databases on the server, one made with the ISPmail
guide's exact CREATE TABLE statements, one by ``app.migrate.migrate``. Their
``SHOW CREATE TABLE`` texts must be equal once these are set aside, and only
these:

- mailprov's documented additions (migration 0002): the indexes
  ``uq_virtual_domains_name``, ``uq_virtual_aliases_source_destination``,
  ``ix_virtual_users_domain_id_email``, ``ix_virtual_aliases_domain_id_source``,
  ``ix_virtual_aliases_destination``; and, because the two ``domain_id, ...``
  indexes now back the foreign keys, the ``KEY `domain_id``` that InnoDB
  creates by itself for a foreign key without an index (auto-generated, like
  the constraint names);
- auto-generated constraint names and AUTO_INCREMENT counters;
- the table character set and collation: the guide says utf8 (MariaDB's
  3-byte utf8mb3), mailprov creates utf8mb4.

Every backend: the case of a lookup key. Postfix looks up canonical keys; how
each database compares other spellings is shown, not assumed.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import IntegrityError

from app.config import Settings
from app.db import create_db_engine
from app.migrate import migrate
from tests.backends import BACKEND, scratch_database
from tests.helpers import api_client, empty_database, sql

mariadb_only = pytest.mark.skipif(
    BACKEND != "mariadb", reason="compares MariaDB's SHOW CREATE TABLE with the guide's SQL"
)

ISPMAIL = ("virtual_domains", "virtual_users", "virtual_aliases")

# The ISPmail guide's statements, verbatim.
GUIDE_SQL = [
    "CREATE TABLE IF NOT EXISTS `virtual_domains` (`id` int(11) NOT NULL auto_increment, "
    "`name` varchar(50) NOT NULL, PRIMARY KEY (`id`)) ENGINE=InnoDB DEFAULT CHARSET=utf8;",
    "CREATE TABLE IF NOT EXISTS `virtual_users` (`id` int(11) NOT NULL auto_increment, "
    "`domain_id` int(11) NOT NULL, `email` varchar(100) NOT NULL, "
    "`password` varchar(150) NOT NULL, `quota` bigint(11) NOT NULL DEFAULT 0, "
    "PRIMARY KEY (`id`), UNIQUE KEY `email` (`email`), FOREIGN KEY (domain_id) "
    "REFERENCES virtual_domains(id) ON DELETE CASCADE) ENGINE=InnoDB DEFAULT CHARSET=utf8;",
    "CREATE TABLE IF NOT EXISTS `virtual_aliases` (`id` int(11) NOT NULL auto_increment, "
    "`domain_id` int(11) NOT NULL, `source` varchar(100) NOT NULL, "
    "`destination` varchar(100) NOT NULL, PRIMARY KEY (`id`), FOREIGN KEY (domain_id) "
    "REFERENCES virtual_domains(id) ON DELETE CASCADE) ENGINE=InnoDB DEFAULT CHARSET=utf8;",
]

# mailprov's own indexes (migration 0002), exactly as SHOW CREATE TABLE prints them.
MAILPROV_INDEXES = {
    "virtual_domains": {
        "uq_virtual_domains_name": "UNIQUE KEY `uq_virtual_domains_name` (`name`)",
    },
    "virtual_users": {
        "ix_virtual_users_domain_id_email": (
            "KEY `ix_virtual_users_domain_id_email` (`domain_id`,`email`)"
        ),
    },
    "virtual_aliases": {
        "uq_virtual_aliases_source_destination": (
            "UNIQUE KEY `uq_virtual_aliases_source_destination` (`source`,`destination`)"
        ),
        "ix_virtual_aliases_domain_id_source": (
            "KEY `ix_virtual_aliases_domain_id_source` (`domain_id`,`source`)"
        ),
        "ix_virtual_aliases_destination": "KEY `ix_virtual_aliases_destination` (`destination`)",
    },
}
# What InnoDB adds on its own for a foreign key column that has no index yet.
IMPLICIT_FK_INDEX = "KEY `domain_id` (`domain_id`)"
KEY_LINE = re.compile(r"^(?:UNIQUE )?KEY `([^`]+)` ")
TABLE_OPTIONS = re.compile(
    r"^\) ENGINE=(?P<engine>\w+)(?: AUTO_INCREMENT=\d+)? DEFAULT CHARSET=(?P<charset>\w+)"
    r"(?: COLLATE=(?P<collation>\w+))?$"
)


@contextmanager
def mariadb_database(tmp: Path) -> Iterator[Engine]:
    with scratch_database(tmp) as url:
        engine = create_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def show_create_table(engine: Engine, table: str) -> str:
    return str(sql(engine, f"SHOW CREATE TABLE `{table}`")[0][1])


def split(ddl: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(normalised lines, KEY lines by index name, table options) of a SHOW CREATE TABLE."""
    head, *body, tail = ddl.splitlines()
    options = TABLE_OPTIONS.match(tail.strip())
    assert options, tail
    lines = [head]
    keys: dict[str, str] = {}
    for raw in body:
        line = raw.strip().rstrip(",")
        # Constraint names are generated (virtual_users_ibfk_1, ...): not part of the contract.
        line = re.sub(r"^CONSTRAINT `[^`]+` FOREIGN KEY", "FOREIGN KEY", line)
        named = KEY_LINE.match(line)
        if named:
            keys[named.group(1)] = line
        lines.append(line)
    lines.append(f") ENGINE={options['engine']}")
    return lines, keys, {k: v for k, v in options.groupdict().items() if v}


def normalised(ddl: str, drop: set[str]) -> str:
    """The text without the named KEY lines, generated names, counters and charset."""
    lines, keys, _ = split(ddl)
    dropped = {keys[name] for name in drop if name in keys}
    return "\n".join(line for line in lines if line not in dropped)


@pytest.fixture
def guide_and_ours(tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    with (
        mariadb_database(tmp_path / "guide") as guide,
        mariadb_database(tmp_path / "ours") as ours,
    ):
        with guide.begin() as conn:
            for statement in GUIDE_SQL:
                conn.exec_driver_sql(statement)
        migrating = create_db_engine(ours.url.render_as_string(hide_password=False))
        try:
            migrate(migrating)
        finally:
            migrating.dispose()
        yield guide, ours


@mariadb_only
@pytest.mark.parametrize("table", ISPMAIL)
def test_migrated_table_is_the_guides_but_for_display_width(
    guide_and_ours: tuple[Engine, Engine], table: str
) -> None:
    guide, ours = guide_and_ours
    guide_ddl, our_ddl = show_create_table(guide, table), show_create_table(ours, table)
    ours_extra = set(MAILPROV_INDEXES[table])

    # The texts, with only the documented differences set aside, are equal.
    guide_text = normalised(guide_ddl, {"domain_id"})
    our_text = normalised(our_ddl, ours_extra)
    assert our_text == guide_text

    guide_lines, guide_keys, guide_options = split(guide_ddl)
    our_lines, our_keys, our_options = split(our_ddl)
    # mailprov's extra indexes are exactly the documented ones, defined as documented.
    assert set(our_keys) - set(guide_keys) == ours_extra
    for name, line in MAILPROV_INDEXES[table].items():
        assert our_keys[name] == line
    # The guide's only index mailprov lacks is InnoDB's implicit one for the foreign key,
    # and each foreign key column still leads an index of mailprov's.
    if table == "virtual_domains":
        assert set(guide_keys) - set(our_keys) == set()
    else:
        assert set(guide_keys) - set(our_keys) == {"domain_id"}
        assert guide_keys["domain_id"] == IMPLICIT_FK_INDEX
        assert any("(`domain_id`," in our_keys[name] for name in ours_extra)
        fk = "FOREIGN KEY (`domain_id`) REFERENCES `virtual_domains` (`id`) ON DELETE CASCADE"
        assert fk in our_lines and fk in guide_lines
    # Engine equal; character sets differ exactly as documented.
    assert guide_options["engine"] == our_options["engine"] == "InnoDB"
    assert guide_options["charset"] in {"utf8", "utf8mb3"}
    assert our_options["charset"] == "utf8mb4"


@mariadb_only
def test_migrated_tables_are_the_guides_exactly(guide_and_ours: tuple[Engine, Engine]) -> None:
    guide, ours = guide_and_ours
    for table in ISPMAIL:
        guide_text = normalised(show_create_table(guide, table), {"domain_id"})
        our_text = normalised(show_create_table(ours, table), set(MAILPROV_INDEXES[table]))
        assert our_text == guide_text


@mariadb_only
def test_mailprov_keeps_its_own_tables_beside_the_contract(
    guide_and_ours: tuple[Engine, Engine],
) -> None:
    _, ours = guide_and_ours
    tables = {row[0] for row in sql(ours, "SHOW TABLES")}
    assert set(ISPMAIL) <= tables
    own = tables - set(ISPMAIL) - {"alembic_version"}
    assert "mailprov_locks" in own
    assert all(name.startswith("mailprov_") for name in own), own
    for name in own:
        assert "ENGINE=InnoDB" in show_create_table(ours, name), name


# ---------------------------------------------------------------- every backend

# Postfix's virtual_mailbox_maps and virtual_mailbox_domains, %s bound as :k.
MAILBOX_LOOKUP = "SELECT 1 FROM virtual_users WHERE email=:k"
DOMAIN_LOOKUP = "SELECT 1 FROM virtual_domains WHERE name=:k"


@pytest.fixture
def john(settings: Settings, engine: Engine) -> Iterator[Engine]:
    """John@Example.ORG, created through the API."""
    try:
        with api_client(settings) as client:
            response = client.post("/domains", json={"name": "Example.ORG"})
            assert response.status_code == 201, response.text
            body = {"address": "John@Example.ORG", "password": "summersun"}
            response = client.post("/mailboxes", json=body)
            assert response.status_code == 201, response.text
            assert response.json()["address"] == "john@example.org"
        yield engine
    finally:
        empty_database(engine)


def test_canonical_lookup_answers_alike_on_every_backend(john: Engine) -> None:
    assert sql(john, "SELECT email FROM virtual_users") == [("john@example.org",)]
    assert sql(john, "SELECT name FROM virtual_domains") == [("example.org",)]
    # Postfix lower-cases its lookup keys: this is the query it really runs.
    assert sql(john, MAILBOX_LOOKUP, k="john@example.org") == [(1,)]
    assert sql(john, DOMAIN_LOOKUP, k="example.org") == [(1,)]


def test_other_spellings_depend_on_the_collation(john: Engine) -> None:
    """MariaDB's utf8mb4_general_ci compares case-insensitively, PostgreSQL and SQLite
    byte for byte. Stored keys are therefore canonical (lower case), and only the
    canonical key is what every backend answers alike."""
    case_insensitive = BACKEND == "mariadb"
    found = [(1,)] if case_insensitive else []
    assert sql(john, MAILBOX_LOOKUP, k="JOHN@example.org") == found
    assert sql(john, MAILBOX_LOOKUP, k="John@Example.ORG") == found
    assert sql(john, DOMAIN_LOOKUP, k="EXAMPLE.org") == found
    # The same collation makes MariaDB's UNIQUE(email) case-insensitive too: a row
    # written by hand in another spelling is refused there, accepted elsewhere.
    domain_id = sql(john, "SELECT id FROM virtual_domains")[0][0]
    insert = (
        "INSERT INTO virtual_users (domain_id, email, password, quota) "
        "VALUES (:d, 'JOHN@example.org', '{BLF-CRYPT}x', 0)"
    )
    with john.connect() as conn:
        if case_insensitive:
            with pytest.raises(IntegrityError):
                conn.exec_driver_sql(insert.replace(":d", str(int(domain_id))))
        else:
            conn.exec_driver_sql(insert.replace(":d", str(int(domain_id))))
        conn.rollback()
