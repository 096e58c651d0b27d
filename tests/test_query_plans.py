"""How MariaDB reads a deep page of one domain's mailboxes or aliases.

Left to itself MariaDB 10.11 reads ``domain_id = ? AND key > ? ORDER BY key`` by
ref access on domain_id alone and walks the domain from its first row: a deep page
of a 1M-mailbox domain took 93 ms instead of 2 ms (docs/benchmarks.md). The lists
force the (domain_id, key) index; these tests EXPLAIN the very statements a list
request sends and require a range read of that index.
"""

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from app.pagination import encode_cursor
from tests.backends import BACKEND
from tests.helpers import sql

pytestmark = pytest.mark.skipif(BACKEND != "mariadb", reason="MariaDB's optimizer")

HASH = "{BLF-CRYPT}$2y$05$" + "a" * 53


@pytest.fixture
def statements(client: TestClient) -> Iterator[list[tuple[str, Any]]]:
    """Every SQL statement the app sends while the test runs, with its parameters."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def explain(engine: Engine, statement: str, parameters: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.exec_driver_sql("EXPLAIN " + statement, parameters)
        return [dict(row._mapping) for row in result]


def seed(client: TestClient, engine: Engine, rows: int) -> int:
    assert client.post("/domains", json={"name": "big.example"}).status_code == 201
    assert client.post("/domains", json={"name": "other.example"}).status_code == 201
    [(big,)] = sql(engine, "SELECT id FROM virtual_domains WHERE name = 'big.example'")
    [(other,)] = sql(engine, "SELECT id FROM virtual_domains WHERE name = 'other.example'")
    with engine.begin() as conn:
        for domain_id, name in ((big, "big.example"), (other, "other.example")):
            conn.exec_driver_sql(
                "INSERT INTO virtual_users (domain_id, email, password, quota) VALUES "
                + ", ".join(f"({domain_id}, 'u{i:05d}@{name}', '{HASH}', 0)" for i in range(rows))
            )
            conn.exec_driver_sql(
                "INSERT INTO virtual_aliases (domain_id, source, destination) VALUES "
                + ", ".join(
                    f"({domain_id}, 'a{i:05d}@{name}', 'u{i:05d}@{name}')" for i in range(rows)
                )
            )
        conn.exec_driver_sql("ANALYZE TABLE virtual_users, virtual_aliases")
    return big


@pytest.mark.parametrize(
    ("path", "cursor", "table", "index"),
    [
        ("/mailboxes", "u01000@big.example", "virtual_users", "ix_virtual_users_domain_id_email"),
        ("/aliases", "a01000@big.example", "virtual_aliases",
         "ix_virtual_aliases_domain_id_source"),
    ],
)  # fmt: skip
def test_deep_page_of_a_domain_is_a_range_read(
    client: TestClient,
    engine: Engine,
    statements: list[tuple[str, Any]],
    path: str,
    cursor: str,
    table: str,
    index: str,
) -> None:
    seed(client, engine, 2000)
    statements.clear()
    params = {"domain": "big.example", "cursor": encode_cursor(cursor), "total": "false"}
    page = client.get(path, params=params)
    assert page.status_code == 200
    first = page.json()["items"][0]
    assert (first.get("address") or first.get("source")).endswith("01001@big.example")
    [(statement, parameters)] = [
        (s, p) for s, p in statements if f"FROM {table}" in s and "ORDER BY" in s
    ]
    [plan] = [row for row in explain(engine, statement, parameters) if row["table"] == table]
    assert (plan["type"], plan["key"]) == ("range", index), plan
