import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from tests.helpers import sql


@pytest.fixture
def hosted(client: TestClient) -> None:
    for name in ["example.org", "example.net"]:
        assert client.post("/domains", json={"name": name}).status_code == 201
    for address in ["john@example.org", "lisa@example.org", "bob@example.net"]:
        assert (
            client.post("/mailboxes", json={"address": address, "password": "pw"}).status_code
            == 201
        )


def alias(client: TestClient, source: str, *destinations: str) -> int:
    return client.post(
        "/aliases", json={"source": source, "destinations": list(destinations)}
    ).status_code


def test_create_alias_one_row_per_destination(
    client: TestClient, hosted: None, engine: Engine
) -> None:
    response = client.post(
        "/aliases",
        json={
            "source": "Info@Example.org",
            "destinations": [
                "LISA@example.org",
                "john@example.org",
                "Ext@Bücher.de",
                "john@example.org",
            ],
        },
    )
    assert response.status_code == 201
    assert response.json() == {
        "source": "info@example.org",
        "domain": "example.org",
        "catch_all": False,
        "destinations": ["ext@xn--bcher-kva.de", "john@example.org", "lisa@example.org"],
    }
    assert response.headers["location"] == "/aliases/info@example.org"
    rows = sql(
        engine,
        "SELECT d.name, a.source, a.destination FROM virtual_aliases a "
        "JOIN virtual_domains d ON d.id = a.domain_id ORDER BY a.destination",
    )
    assert rows == [
        ("example.org", "info@example.org", "ext@xn--bcher-kva.de"),
        ("example.org", "info@example.org", "john@example.org"),
        ("example.org", "info@example.org", "lisa@example.org"),
    ]


def test_create_alias_catch_all(client: TestClient, hosted: None) -> None:
    response = client.post(
        "/aliases", json={"source": "@EXAMPLE.org", "destinations": ["john@example.org"]}
    )
    assert response.status_code == 201
    assert response.json()["catch_all"] is True
    assert client.get("/aliases/@example.org").json()["destinations"] == ["john@example.org"]


def test_create_alias_existing_source_conflicts(client: TestClient, hosted: None) -> None:
    assert alias(client, "info@example.org", "john@example.org") == 201
    response = client.post(
        "/aliases", json={"source": "info@example.org", "destinations": ["lisa@example.org"]}
    )
    assert response.status_code == 409
    assert response.json()["type"] == "urn:mailprov:problem:alias-exists"


def test_create_alias_unhosted_source_refused(client: TestClient, hosted: None) -> None:
    response = client.post(
        "/aliases", json={"source": "x@other.org", "destinations": ["john@example.org"]}
    )
    assert response.status_code == 422
    assert response.json()["type"] == "urn:mailprov:problem:domain-not-hosted"
    assert response.json()["errors"][0]["field"] == "source"


def test_create_alias_unknown_local_destination_refused(
    client: TestClient, hosted: None, engine: Engine
) -> None:
    response = client.post(
        "/aliases",
        json={"source": "info@example.org", "destinations": ["x@ext.net", "nobody@example.net"]},
    )
    assert response.status_code == 422
    assert response.json()["type"] == "urn:mailprov:problem:unknown-destination"
    assert response.json()["errors"][0]["field"] == "destinations"
    assert sql(engine, "SELECT COUNT(*) FROM virtual_aliases") == [(0,)]


def test_create_alias_destination_may_be_alias(client: TestClient, hosted: None) -> None:
    assert alias(client, "team@example.org", "john@example.org", "lisa@example.org") == 201
    assert alias(client, "info@example.net", "team@example.org") == 201


def test_create_alias_bad_input_refused(client: TestClient, hosted: None) -> None:
    cases = [
        ({"source": "info@example.org", "destinations": []}, "destinations"),
        ({"source": "info@example.org", "destinations": ["@example.org"]}, "destinations.0"),
        ({"source": "info@example.org", "destinations": ["not an address"]}, "destinations.0"),
        ({"source": "info@example.org", "destinations": "john@example.org"}, "destinations"),
        ({"source": "in fo@example.org", "destinations": ["john@example.org"]}, "source"),
        ({"source": "info@example.org"}, "destinations"),
    ]
    for body, field in cases:
        response = client.post("/aliases", json=body)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["field"] == field, body


def test_create_alias_self_loop_refused(client: TestClient, hosted: None) -> None:
    response = client.post(
        "/aliases", json={"source": "loop@example.org", "destinations": ["loop@example.org"]}
    )
    # loop@ is not a mailbox: as a destination it is unknown, as a source it would loop.
    assert response.status_code == 422
    assert response.json()["type"] == "urn:mailprov:problem:alias-loop"


def test_create_alias_keep_copy_on_mailbox_allowed(client: TestClient, hosted: None) -> None:
    assert alias(client, "john@example.org", "john@example.org", "john@ext.net") == 201


def test_create_alias_cycle_refused(client: TestClient, hosted: None, engine: Engine) -> None:
    assert alias(client, "a@example.org", "john@example.org") == 201
    assert alias(client, "b@example.org", "a@example.org") == 201
    assert alias(client, "c@example.net", "b@example.org") == 201
    # a -> c closes a -> c -> b -> a.
    response = client.post(
        "/aliases/a@example.org/destinations", json={"destination": "c@example.net"}
    )
    assert response.status_code == 422
    assert response.json()["type"] == "urn:mailprov:problem:alias-loop"
    response = client.put("/aliases/a@example.org", json={"destinations": ["c@example.net"]})
    assert response.status_code == 422
    assert client.get("/aliases/a@example.org").json()["destinations"] == ["john@example.org"]
    assert sql(engine, "SELECT COUNT(*) FROM virtual_aliases") == [(3,)]


def test_create_alias_cycle_through_mailbox_alias_refused(client: TestClient, hosted: None) -> None:
    assert (
        alias(client, "john@example.org", "john@example.org", "team@example.org") != 201
    )  # team unknown yet
    assert alias(client, "team@example.org", "john@example.org") == 201
    assert alias(client, "john@example.org", "john@example.org", "team@example.org") == 422


def test_list_aliases_filters_and_pages(client: TestClient, hosted: None) -> None:
    assert alias(client, "info@example.org", "john@example.org", "lisa@example.org") == 201
    assert alias(client, "@example.org", "john@example.org") == 201
    assert alias(client, "sales@example.org", "lisa@example.org") == 201
    assert alias(client, "info@example.net", "bob@example.net", "ext@ext.net") == 201

    everything = client.get("/aliases").json()
    assert everything["total"] == 4
    assert [a["source"] for a in everything["items"]] == [
        "@example.org",
        "info@example.net",
        "info@example.org",
        "sales@example.org",
    ]

    by_domain = client.get("/aliases", params={"domain": "example.org"}).json()
    assert by_domain["total"] == 3
    by_destination = client.get("/aliases", params={"destination": "LISA@example.org"}).json()
    assert [a["source"] for a in by_destination["items"]] == [
        "info@example.org",
        "sales@example.org",
    ]
    # The whole alias is shown, not only the matching row.
    assert by_destination["items"][0]["destinations"] == ["john@example.org", "lisa@example.org"]
    by_source = client.get("/aliases", params={"source": "@example.org"}).json()
    assert by_source["total"] == 1 and by_source["items"][0]["catch_all"] is True

    seen, cursor = [], None
    while True:
        page = client.get(
            "/aliases", params={"limit": 1} | ({"cursor": cursor} if cursor else {})
        ).json()
        assert page["total"] == 4
        seen += [a["source"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [a["source"] for a in everything["items"]]


def test_read_alias_missing_is_404(client: TestClient, hosted: None) -> None:
    response = client.get("/aliases/none@example.org")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:mailprov:problem:alias-not-found"


def test_replace_alias_destinations(client: TestClient, hosted: None, engine: Engine) -> None:
    assert alias(client, "info@example.org", "john@example.org", "x@ext.net") == 201
    kept_id = sql(engine, "SELECT id FROM virtual_aliases WHERE destination = 'john@example.org'")
    response = client.put(
        "/aliases/info@example.org", json={"destinations": ["john@example.org", "lisa@example.org"]}
    )
    assert response.status_code == 200
    assert response.json()["destinations"] == ["john@example.org", "lisa@example.org"]
    assert (
        sql(engine, "SELECT id FROM virtual_aliases WHERE destination = 'john@example.org'")
        == kept_id
    )
    assert (
        client.put("/aliases/none@example.org", json={"destinations": ["x@ext.net"]}).status_code
        == 404
    )
    assert client.put("/aliases/info@example.org", json={"destinations": []}).status_code == 422


def test_add_and_remove_destination(client: TestClient, hosted: None) -> None:
    assert alias(client, "info@example.org", "john@example.org") == 201
    added = client.post(
        "/aliases/info@example.org/destinations", json={"destination": "Lisa@example.org"}
    )
    assert added.status_code == 200
    assert added.json()["destinations"] == ["john@example.org", "lisa@example.org"]
    again = client.post(
        "/aliases/info@example.org/destinations", json={"destination": "lisa@example.org"}
    )
    assert again.status_code == 409
    assert again.json()["type"] == "urn:mailprov:problem:destination-exists"
    unknown = client.post(
        "/aliases/info@example.org/destinations", json={"destination": "zz@example.org"}
    )
    assert unknown.status_code == 422

    removed = client.delete("/aliases/info@example.org/destinations/LISA@example.org")
    assert removed.status_code == 200
    assert removed.json()["destinations"] == ["john@example.org"]
    assert (
        client.delete("/aliases/info@example.org/destinations/lisa@example.org").status_code == 404
    )
    last = client.delete("/aliases/info@example.org/destinations/john@example.org")
    assert last.status_code == 409
    assert last.json()["type"] == "urn:mailprov:problem:last-destination"
    assert (
        client.post(
            "/aliases/none@example.org/destinations", json={"destination": "john@example.org"}
        ).status_code
        == 404
    )


def test_delete_alias(client: TestClient, hosted: None, engine: Engine) -> None:
    assert alias(client, "info@example.org", "john@example.org", "x@ext.net") == 201
    response = client.delete("/aliases/info@example.org")
    assert response.status_code == 200
    assert response.json() == {
        "source": "info@example.org",
        "destinations_removed": ["john@example.org", "x@ext.net"],
        "alias_destinations_removed": [],
    }
    assert sql(engine, "SELECT COUNT(*) FROM virtual_aliases") == [(0,)]
    assert client.delete("/aliases/info@example.org").status_code == 404


def test_delete_alias_referenced_refused_then_cascaded(client: TestClient, hosted: None) -> None:
    assert alias(client, "team@example.org", "john@example.org") == 201
    assert alias(client, "all@example.org", "team@example.org", "lisa@example.org") == 201
    refused = client.delete("/aliases/team@example.org")
    assert refused.status_code == 409
    assert refused.json()["type"] == "urn:mailprov:problem:still-referenced"
    response = client.delete("/aliases/team@example.org", params={"cascade": True})
    assert response.status_code == 200
    assert response.json()["alias_destinations_removed"] == [
        {"source": "all@example.org", "destination": "team@example.org"}
    ]
    assert client.get("/aliases/all@example.org").json()["destinations"] == ["lisa@example.org"]


def test_delete_alias_of_mailbox_keeps_references(client: TestClient, hosted: None) -> None:
    # john@ stays deliverable as a mailbox, so aliases pointing at it stay valid.
    assert alias(client, "john@example.org", "john@example.org", "john@ext.net") == 201
    assert alias(client, "info@example.org", "john@example.org") == 201
    response = client.delete("/aliases/john@example.org")
    assert response.status_code == 200
    assert response.json()["alias_destinations_removed"] == []
    assert client.get("/aliases/info@example.org").json()["destinations"] == ["john@example.org"]
