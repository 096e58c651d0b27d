import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.helpers import sql


@pytest.fixture
def domain(client: TestClient) -> str:
    assert client.post("/domains", json={"name": "example.org"}).status_code == 201
    return "example.org"


def test_create_mailbox_derives_domain_and_normalises(
    client: TestClient, domain: str, engine: Engine
) -> None:
    response = client.post(
        "/mailboxes",
        json={"address": "John.Doe@EXAMPLE.org", "password": "summersun", "quota": 1024},
    )
    assert response.status_code == 201
    assert response.json() == {
        "address": "john.doe@example.org",
        "domain": "example.org",
        "quota": 1024,
        "maildir": "/var/vmail/example.org/john.doe",
    }
    assert response.headers["location"] == "/mailboxes/john.doe@example.org"
    rows = sql(
        engine,
        "SELECT d.name, u.quota FROM virtual_users u JOIN virtual_domains d ON d.id = u.domain_id "
        "WHERE u.email = 'john.doe@example.org'",
    )
    assert rows == [("example.org", 1024)]


def test_create_mailbox_idn_domain(client: TestClient) -> None:
    client.post("/domains", json={"name": "bücher.de"})
    response = client.post("/mailboxes", json={"address": "Anna@Bücher.de", "password": "pw"})
    assert response.status_code == 201
    assert response.json()["address"] == "anna@xn--bcher-kva.de"
    assert client.get("/mailboxes/anna@bücher.de").status_code == 200


def test_create_mailbox_unhosted_domain_refused(client: TestClient, domain: str) -> None:
    response = client.post("/mailboxes", json={"address": "a@example.net", "password": "pw"})
    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "urn:mailprov:problem:domain-not-hosted"
    assert body["errors"][0]["field"] == "address"


def test_create_mailbox_duplicate_conflicts(
    client: TestClient, domain: str, engine: Engine
) -> None:
    assert (
        client.post("/mailboxes", json={"address": "a@example.org", "password": "pw"}).status_code
        == 201
    )
    response = client.post("/mailboxes", json={"address": "A@example.org", "password": "other"})
    assert response.status_code == 409
    assert response.json()["type"] == "urn:mailprov:problem:mailbox-exists"
    assert sql(engine, "SELECT COUNT(*) FROM virtual_users") == [(1,)]


def test_create_mailbox_domain_id_cannot_be_passed(client: TestClient, domain: str) -> None:
    response = client.post(
        "/mailboxes", json={"address": "a@example.org", "password": "pw", "domain_id": 1}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "domain_id"


@pytest.mark.parametrize("quota", [True, "5", -1, 1.5, 2**63, None])
def test_create_mailbox_bad_quota_refused(client: TestClient, domain: str, quota: object) -> None:
    response = client.post(
        "/mailboxes", json={"address": "a@example.org", "password": "pw", "quota": quota}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "quota"


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign",
        "a@b",
        "a b@example.org",
        "a/b@example.org",
        "ä@example.org",
        "@example.org",
        "a@example.org.",
        "x" * 65 + "@example.org",
    ],
)
def test_create_mailbox_bad_address_refused(client: TestClient, domain: str, address: str) -> None:
    response = client.post("/mailboxes", json={"address": address, "password": "pw"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "address"


def test_create_mailbox_max_quota_accepted(client: TestClient, domain: str) -> None:
    response = client.post(
        "/mailboxes", json={"address": "a@example.org", "password": "pw", "quota": 2**63 - 1}
    )
    assert response.status_code == 201
    assert client.get("/mailboxes/a@example.org").json()["quota"] == 2**63 - 1


def test_read_mailbox_missing_is_404(client: TestClient, domain: str) -> None:
    response = client.get("/mailboxes/nobody@example.org")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:mailprov:problem:mailbox-not-found"


def test_list_mailboxes_filter_search_and_pages(client: TestClient, domain: str) -> None:
    client.post("/domains", json={"name": "example.net"})
    for local in ["carol", "alice", "bob", "dave", "alina"]:
        client.post("/mailboxes", json={"address": f"{local}@example.org", "password": "pw"})
    client.post("/mailboxes", json={"address": "alice@example.net", "password": "pw"})

    everything = client.get("/mailboxes").json()
    assert everything["total"] == 6
    assert [m["address"] for m in everything["items"]] == sorted(
        m["address"] for m in everything["items"]
    )

    only_org = client.get("/mailboxes", params={"domain": "EXAMPLE.ORG", "limit": 2}).json()
    assert only_org["total"] == 5
    seen = [m["address"] for m in only_org["items"]]
    cursor = only_org["next_cursor"]
    while cursor:
        page = client.get(
            "/mailboxes", params={"domain": "example.org", "limit": 2, "cursor": cursor}
        ).json()
        seen += [m["address"] for m in page["items"]]
        cursor = page["next_cursor"]
    assert seen == [f"{n}@example.org" for n in ["alice", "alina", "bob", "carol", "dave"]]

    search = client.get("/mailboxes", params={"q": "ali"}).json()
    assert [m["address"] for m in search["items"]] == [
        "alice@example.net",
        "alice@example.org",
        "alina@example.org",
    ]
    assert search["total"] == 3

    # LIKE wildcards in the search text are taken literally.
    assert client.get("/mailboxes", params={"q": "%"}).json()["total"] == 0
    assert client.get("/mailboxes", params={"domain": "unknown.org"}).json()["total"] == 0


def test_list_mailboxes_bad_filters_refused(client: TestClient) -> None:
    for params, field in [
        ({"domain": "bad_domain"}, "domain"),
        ({"cursor": "!!"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": "x"}, "limit"),
    ]:
        response = client.get("/mailboxes", params=params)
        assert response.status_code == 422, params
        assert response.json()["errors"][0]["field"] == field
        assert response.json()["errors"][0]["location"] == "query"


def test_update_mailbox_quota_only_keeps_password(
    client: TestClient, domain: str, engine: Engine
) -> None:
    client.post("/mailboxes", json={"address": "a@example.org", "password": "pw"})
    before = sql(engine, "SELECT password FROM virtual_users")
    response = client.patch("/mailboxes/a@example.org", json={"quota": 5000})
    assert response.status_code == 200
    assert response.json()["quota"] == 5000
    assert sql(engine, "SELECT password, quota FROM virtual_users") == [(before[0][0], 5000)]


def test_update_mailbox_password_changes_hash(
    client: TestClient, domain: str, engine: Engine
) -> None:
    client.post("/mailboxes", json={"address": "a@example.org", "password": "old", "quota": 7})
    before = sql(engine, "SELECT password FROM virtual_users")
    assert client.patch("/mailboxes/a@example.org", json={"password": "new"}).status_code == 200
    after = sql(engine, "SELECT password, quota FROM virtual_users")
    assert after[0][0] != before[0][0]
    assert after[0][1] == 7


def test_update_mailbox_empty_body_refused(client: TestClient, domain: str) -> None:
    client.post("/mailboxes", json={"address": "a@example.org", "password": "pw"})
    response = client.patch("/mailboxes/a@example.org", json={})
    assert response.status_code == 422
    assert client.patch("/mailboxes/a@example.org", json={"quota": None}).status_code == 422


def test_update_mailbox_missing_is_404(client: TestClient, domain: str) -> None:
    assert client.patch("/mailboxes/x@example.org", json={"quota": 1}).status_code == 404


def test_delete_mailbox(client: TestClient, domain: str, engine: Engine) -> None:
    client.post("/mailboxes", json={"address": "a@example.org", "password": "pw"})
    response = client.delete("/mailboxes/A@example.org")
    assert response.status_code == 200
    assert response.json() == {
        "address": "a@example.org",
        "maildir_kept": "/var/vmail/example.org/a",
        "alias_destinations_removed": [],
    }
    assert sql(engine, "SELECT COUNT(*) FROM virtual_users") == [(0,)]
    assert client.delete("/mailboxes/a@example.org").status_code == 404


def test_delete_mailbox_referenced_refused_then_cascaded(
    client: TestClient, domain: str, engine: Engine
) -> None:
    client.post("/mailboxes", json={"address": "a@example.org", "password": "pw"})
    client.post("/aliases", json={"source": "info@example.org", "destinations": ["a@example.org"]})
    client.post(
        "/aliases",
        json={"source": "sales@example.org", "destinations": ["a@example.org", "x@ext.net"]},
    )
    client.post(
        "/aliases",
        json={"source": "all@example.org", "destinations": ["info@example.org", "y@ext.net"]},
    )

    refused = client.delete("/mailboxes/a@example.org")
    assert refused.status_code == 409
    assert refused.json()["type"] == "urn:mailprov:problem:still-referenced"
    assert "info@example.org" in refused.json()["detail"]
    assert sql(engine, "SELECT COUNT(*) FROM virtual_users") == [(1,)]

    response = client.delete("/mailboxes/a@example.org", params={"cascade": True})
    assert response.status_code == 200
    removed = sorted(
        (r["source"], r["destination"]) for r in response.json()["alias_destinations_removed"]
    )
    assert removed == [
        ("all@example.org", "info@example.org"),
        ("info@example.org", "a@example.org"),
        ("sales@example.org", "a@example.org"),
    ]
    assert sql(engine, "SELECT source, destination FROM virtual_aliases ORDER BY source") == [
        ("all@example.org", "y@ext.net"),
        ("sales@example.org", "x@ext.net"),
    ]


def test_delete_mailbox_with_keep_copy_alias(
    client: TestClient, domain: str, engine: Engine
) -> None:
    client.post("/mailboxes", json={"address": "a@example.org", "password": "pw"})
    created = client.post(
        "/aliases", json={"source": "a@example.org", "destinations": ["a@example.org", "a@ext.net"]}
    )
    assert created.status_code == 201
    assert client.delete("/mailboxes/a@example.org").status_code == 409
    response = client.delete("/mailboxes/a@example.org", params={"cascade": "true"})
    assert response.status_code == 200
    assert response.json()["alias_destinations_removed"] == [
        {"source": "a@example.org", "destination": "a@example.org"}
    ]
    assert sql(engine, "SELECT source, destination FROM virtual_aliases") == [
        ("a@example.org", "a@ext.net")
    ]
