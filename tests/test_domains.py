from fastapi.testclient import TestClient

PROBLEM = "application/problem+json"


def test_create_domain_normalises_name(client: TestClient) -> None:
    response = client.post("/domains", json={"name": "Bücher.DE"})
    assert response.status_code == 201
    assert response.json() == {"name": "xn--bcher-kva.de", "name_unicode": "bücher.de"}
    assert response.headers["location"] == "/domains/xn--bcher-kva.de"


def test_create_domain_duplicate_conflicts(client: TestClient) -> None:
    assert client.post("/domains", json={"name": "example.org"}).status_code == 201
    response = client.post("/domains", json={"name": "EXAMPLE.org"})
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:mailprov:problem:domain-exists"


def test_create_domain_invalid_names_refused(client: TestClient) -> None:
    too_long = "a" * 40 + ".example.org"  # 52 bytes
    idn_too_long = "bücher-über-straße-und-grüße-für-die-größten.org"  # 48 chars, 58 as A-label
    for name in [
        "",
        "bad_name.org",
        "localhost",
        "example.org.",
        "1.2.3.4",
        "-a.org",
        " a.org",
        too_long,
        idn_too_long,
        "a..org",
    ]:
        response = client.post("/domains", json={"name": name})
        assert response.status_code == 422, name
        body = response.json()
        assert body["type"] == "urn:mailprov:problem:validation"
        assert body["errors"][0]["field"] == "name"


def test_create_domain_fifty_bytes_accepted(client: TestClient) -> None:
    name = "a" * 46 + ".org"
    assert len(name) == 50
    assert client.post("/domains", json={"name": name}).status_code == 201


def test_create_domain_unknown_field_refused(client: TestClient) -> None:
    response = client.post("/domains", json={"name": "example.org", "id": 7})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "id"


def test_read_domain_counts(client: TestClient) -> None:
    client.post("/domains", json={"name": "example.org"})
    client.post("/mailboxes", json={"address": "a@example.org", "password": "pw-a"})
    client.post("/mailboxes", json={"address": "b@example.org", "password": "pw-b"})
    client.post(
        "/aliases",
        json={"source": "info@example.org", "destinations": ["a@example.org", "b@example.org"]},
    )
    client.post("/aliases", json={"source": "@example.org", "destinations": ["a@example.org"]})
    response = client.get("/domains/EXAMPLE.org")
    assert response.status_code == 200
    assert response.json() == {
        "name": "example.org",
        "name_unicode": "example.org",
        "mailboxes": 2,
        "aliases": 2,
        "maildir_root": "/var/vmail/example.org",
    }


def test_read_domain_missing_is_404(client: TestClient) -> None:
    response = client.get("/domains/example.org")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:mailprov:problem:domain-not-found"


def test_read_domain_invalid_name_is_422(client: TestClient) -> None:
    response = client.get("/domains/not_a_domain")
    assert response.status_code == 422
    assert response.json()["errors"][0] == {
        "field": "name",
        "location": "path",
        "message": "name is not a valid domain name",
    }


def test_list_domains_pages_in_name_order(client: TestClient) -> None:
    names = [f"d{i:02d}.example" for i in range(7)]
    for name in reversed(names):
        assert client.post("/domains", json={"name": name}).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/domains", params=params).json()
        assert page["total"] == 7
        assert page["limit"] == 3
        seen += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names


def test_list_domains_search(client: TestClient) -> None:
    for name in ["alpha.org", "beta.org", "alphabet.net"]:
        client.post("/domains", json={"name": name})
    page = client.get("/domains", params={"q": "ALPHA"}).json()
    assert [d["name"] for d in page["items"]] == ["alpha.org", "alphabet.net"]
    assert page["total"] == 2


def test_list_domains_limit_capped(client: TestClient) -> None:
    client.post("/domains", json={"name": "example.org"})
    assert client.get("/domains", params={"limit": 100000}).json()["limit"] == 500


def test_delete_domain_empty(client: TestClient) -> None:
    client.post("/domains", json={"name": "example.org"})
    response = client.delete("/domains/example.org")
    assert response.status_code == 200
    assert response.json() == {
        "name": "example.org",
        "mailboxes_removed": 0,
        "aliases_removed": 0,
        "alias_destinations_removed": [],
        "maildirs_kept": "/var/vmail/example.org",
    }
    assert client.get("/domains/example.org").status_code == 404


def test_delete_domain_with_content_refused_without_cascade(client: TestClient) -> None:
    client.post("/domains", json={"name": "example.org"})
    client.post("/mailboxes", json={"address": "a@example.org", "password": "pw"})
    response = client.delete("/domains/example.org")
    assert response.status_code == 409
    assert response.json()["type"] == "urn:mailprov:problem:domain-not-empty"
    assert client.get("/mailboxes/a@example.org").status_code == 200


def test_delete_domain_referenced_from_other_domain_refused(client: TestClient) -> None:
    client.post("/domains", json={"name": "example.org"})
    client.post("/domains", json={"name": "example.net"})
    client.post("/mailboxes", json={"address": "a@example.org", "password": "pw"})
    client.post("/aliases", json={"source": "x@example.net", "destinations": ["a@example.org"]})
    client.delete("/mailboxes/a@example.org?cascade=false")
    # Still referenced: the mailbox delete above was refused, so the domain has content.
    assert client.delete("/domains/example.org").status_code == 409


def test_delete_domain_cascade_reports_everything(client: TestClient) -> None:
    client.post("/domains", json={"name": "example.org"})
    client.post("/domains", json={"name": "example.net"})
    client.post("/mailboxes", json={"address": "a@example.org", "password": "pw"})
    client.post("/mailboxes", json={"address": "b@example.net", "password": "pw"})
    client.post("/aliases", json={"source": "info@example.org", "destinations": ["a@example.org"]})
    client.post("/aliases", json={"source": "x@example.net", "destinations": ["a@example.org"]})
    client.post(
        "/aliases",
        json={"source": "y@example.net", "destinations": ["a@example.org", "b@example.net"]},
    )
    client.post("/aliases", json={"source": "z@example.net", "destinations": ["x@example.net"]})
    response = client.delete("/domains/example.org", params={"cascade": "true"})
    assert response.status_code == 200
    body = response.json()
    assert body["mailboxes_removed"] == 1
    assert body["aliases_removed"] == 1
    assert body["maildirs_kept"] == "/var/vmail/example.org"
    removed = sorted((r["source"], r["destination"]) for r in body["alias_destinations_removed"])
    # x@ lost its only destination and vanished, so z@ (pointing at x@) lost its too.
    assert removed == [
        ("x@example.net", "a@example.org"),
        ("y@example.net", "a@example.org"),
        ("z@example.net", "x@example.net"),
    ]
    assert client.get("/aliases/y@example.net").json()["destinations"] == ["b@example.net"]
    assert client.get("/aliases/x@example.net").status_code == 404
    assert client.get("/aliases/z@example.net").status_code == 404
    assert client.get("/mailboxes", params={"domain": "example.org"}).json()["total"] == 0
