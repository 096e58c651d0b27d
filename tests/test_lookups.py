"""After API calls, the exact queries Postfix and Dovecot run (docs/contract.md) answer right."""

import bcrypt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.backends import BACKEND
from tests.helpers import sql

# Postfix: '%s' is the looked-up key (bound here as :key; Postfix quotes it itself).
VIRTUAL_MAILBOX_DOMAINS = "SELECT 1 FROM virtual_domains WHERE name=:key"
VIRTUAL_MAILBOX_MAPS = "SELECT 1 FROM virtual_users WHERE email=:key"
VIRTUAL_ALIAS_MAPS = "SELECT destination FROM virtual_aliases WHERE source=:key"
EMAIL2EMAIL = "SELECT email FROM virtual_users WHERE email=:key"
# Dovecot: '%u' is the user; Dovecot expands %d and %n itself before querying.
PASSWORD_QUERY = "SELECT email AS user, password FROM virtual_users WHERE email=:key"
# SQLite before 3.44 has no concat(): a Dovecot on SQLite would write the same with ||.
QUOTA_RULE = "'*\\:bytes=' || quota" if BACKEND == "sqlite" else "concat('*\\:bytes=', quota)"
USER_QUERY = (
    f"SELECT email AS user, {QUOTA_RULE} AS quota_rule, "
    "'/var/vmail/{domain}/{local}' AS home, 5000 AS uid, 5000 AS gid "
    "FROM virtual_users WHERE email=:key"
)


def virtual_alias_lookup(engine: Engine, address: str) -> list[str] | None:
    """Postfix's virtual_alias_maps = alias map, email2email map.

    Postfix tries each key form (user@domain, then @domain) against all maps in
    order, so the email2email answer for an existing mailbox comes before the
    catch-all's. That is what keeps a catch-all from swallowing real mailboxes.
    """
    domain = address.rpartition("@")[2]
    for key in (address, "@" + domain):
        for query in (VIRTUAL_ALIAS_MAPS, EMAIL2EMAIL):
            rows = sql(engine, query, key=key)
            if rows:
                return sorted(row[0] for row in rows)
    return None


@pytest.fixture
def provisioned(client: TestClient) -> None:
    steps = [
        ("/domains", {"name": "Example.org"}),
        ("/domains", {"name": "bücher.de"}),
        (
            "/mailboxes",
            {"address": "John@Example.org", "password": "summersun", "quota": 1073741824},
        ),
        ("/mailboxes", {"address": "lisa@example.org", "password": "wintermoon"}),
        ("/mailboxes", {"address": "anna@bücher.de", "password": "herbstlaub"}),
        (
            "/aliases",
            {
                "source": "info@example.org",
                "destinations": ["john@example.org", "lisa@example.org", "boss@ext.net"],
            },
        ),
        ("/aliases", {"source": "@example.org", "destinations": ["lisa@example.org"]}),
    ]
    for path, body in steps:
        assert client.post(path, json=body).status_code == 201, body


def test_postfix_finds_domains(provisioned: None, engine: Engine) -> None:
    assert sql(engine, VIRTUAL_MAILBOX_DOMAINS, key="example.org") == [(1,)]
    assert sql(engine, VIRTUAL_MAILBOX_DOMAINS, key="xn--bcher-kva.de") == [(1,)]
    assert sql(engine, VIRTUAL_MAILBOX_DOMAINS, key="example.net") == []


def test_postfix_finds_mailboxes(provisioned: None, engine: Engine) -> None:
    assert sql(engine, VIRTUAL_MAILBOX_MAPS, key="john@example.org") == [(1,)]
    assert sql(engine, VIRTUAL_MAILBOX_MAPS, key="anna@xn--bcher-kva.de") == [(1,)]
    assert sql(engine, VIRTUAL_MAILBOX_MAPS, key="nobody@example.org") == []


def test_postfix_resolves_aliases(provisioned: None, engine: Engine) -> None:
    assert virtual_alias_lookup(engine, "info@example.org") == [
        "boss@ext.net",
        "john@example.org",
        "lisa@example.org",
    ]


def test_postfix_catch_all_does_not_swallow_mailbox(provisioned: None, engine: Engine) -> None:
    assert virtual_alias_lookup(engine, "john@example.org") == ["john@example.org"]
    assert virtual_alias_lookup(engine, "unknown@example.org") == ["lisa@example.org"]
    assert virtual_alias_lookup(engine, "unknown@xn--bcher-kva.de") is None


def test_dovecot_password_query(provisioned: None, engine: Engine) -> None:
    [(user, stored)] = sql(engine, PASSWORD_QUERY, key="john@example.org")
    assert user == "john@example.org"
    scheme, _, digest = stored.partition("}")
    assert scheme == "{BLF-CRYPT"
    assert digest.startswith("$2y$")
    assert bcrypt.checkpw(b"summersun", digest.encode())
    assert not bcrypt.checkpw(b"wintermoon", digest.encode())


def test_dovecot_user_query(provisioned: None, engine: Engine) -> None:
    query = USER_QUERY.format(domain="example.org", local="john")
    assert sql(engine, query, key="john@example.org") == [
        ("john@example.org", "*:bytes=1073741824", "/var/vmail/example.org/john", 5000, 5000)
    ]
    query = USER_QUERY.format(domain="example.org", local="lisa")
    assert sql(engine, query, key="lisa@example.org")[0][1] == "*:bytes=0"


def test_lookups_follow_changes(client: TestClient, provisioned: None, engine: Engine) -> None:
    assert (
        client.patch("/mailboxes/john@example.org", json={"password": "autumnleaf"}).status_code
        == 200
    )
    [(_, stored)] = sql(engine, PASSWORD_QUERY, key="john@example.org")
    assert bcrypt.checkpw(b"autumnleaf", stored.partition("}")[2].encode())

    assert client.delete("/mailboxes/john@example.org", params={"cascade": True}).status_code == 200
    assert sql(engine, VIRTUAL_MAILBOX_MAPS, key="john@example.org") == []
    # The catch-all now takes john's mail, and info@ no longer points at him.
    assert virtual_alias_lookup(engine, "john@example.org") == ["lisa@example.org"]
    assert virtual_alias_lookup(engine, "info@example.org") == ["boss@ext.net", "lisa@example.org"]

    assert client.delete("/domains/example.org", params={"cascade": True}).status_code == 200
    assert sql(engine, VIRTUAL_MAILBOX_DOMAINS, key="example.org") == []
    assert sql(engine, "SELECT COUNT(*) FROM virtual_aliases") == [(0,)]
