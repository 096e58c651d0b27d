"""Who may do what: every route against every kind of key, and what a
domain-scoped key can and cannot learn."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import RouteContext
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.auth import ADMIN, READ, WRITE
from app.config import Settings
from app.main import create_app
from tests.helpers import api_routes, bearer, empty_database, make_key, sql

# Liveness, readiness and the interactive documentation (app.routes.docs).
UNAUTHENTICATED = frozenset({"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc"})
KINDS = [
    "none",
    "malformed",
    "unknown",
    "revoked",
    "expired",
    "read_only",
    "other_domain",
    "right_domain",
    "admin",
]


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: dict[str, Any] | None = None

    def url(self, spare_key: str) -> str:
        return self.path.replace("{spare}", spare_key)


# Every API route, with a request on example.org, and the status each kind of key gets:
# (read_only, other_domain, right_domain, admin); bad or missing keys always get 401.
MATRIX: dict[tuple[str, str], tuple[Call, tuple[int, int, int, int]]] = {
    ("POST", "/domains"): (Call("POST", "/domains", {"name": "new.org"}), (403, 403, 403, 201)),
    ("GET", "/domains"): (Call("GET", "/domains"), (200, 200, 200, 200)),
    ("GET", "/domains/{name}"): (Call("GET", "/domains/example.org"), (200, 403, 200, 200)),
    ("DELETE", "/domains/{name}"): (
        Call("DELETE", "/domains/example.org?cascade=true"),
        (403, 403, 403, 200),
    ),
    ("GET", "/domains/{name}/dkim"): (
        Call("GET", "/domains/example.org/dkim"),
        (200, 403, 200, 200),
    ),
    ("POST", "/domains/{name}/dkim"): (
        Call("POST", "/domains/example.org/dkim", {"algorithm": "ed25519"}),
        (403, 403, 201, 201),
    ),
    ("PATCH", "/domains/{name}/dkim/{selector}"): (
        Call("PATCH", "/domains/example.org/dkim/next", {"state": "active"}),
        (403, 403, 200, 200),
    ),
    ("DELETE", "/domains/{name}/dkim/{selector}"): (
        Call("DELETE", "/domains/example.org/dkim/next"),
        (403, 403, 200, 200),
    ),
    ("GET", "/domains/{name}/dns"): (
        Call("GET", "/domains/example.org/dns"),
        (200, 403, 200, 200),
    ),
    ("GET", "/domains/{name}/dns/check"): (
        Call("GET", "/domains/example.org/dns/check"),
        (200, 403, 200, 200),
    ),
    ("POST", "/mailboxes"): (
        Call("POST", "/mailboxes", {"address": "new@example.org", "password": "pw"}),
        (403, 403, 201, 201),
    ),
    ("GET", "/mailboxes"): (Call("GET", "/mailboxes"), (200, 200, 200, 200)),
    ("GET", "/mailboxes/{address}"): (
        Call("GET", "/mailboxes/john@example.org"),
        (200, 403, 200, 200),
    ),
    ("PATCH", "/mailboxes/{address}"): (
        Call("PATCH", "/mailboxes/john@example.org", {"quota": 1}),
        (403, 403, 200, 200),
    ),
    ("DELETE", "/mailboxes/{address}"): (
        Call("DELETE", "/mailboxes/john@example.org?cascade=true"),
        (403, 403, 200, 200),
    ),
    ("POST", "/aliases"): (
        Call(
            "POST", "/aliases", {"source": "new@example.org", "destinations": ["john@example.org"]}
        ),
        (403, 403, 201, 201),
    ),
    ("GET", "/aliases"): (Call("GET", "/aliases"), (200, 200, 200, 200)),
    ("GET", "/aliases/{source}"): (Call("GET", "/aliases/info@example.org"), (200, 403, 200, 200)),
    ("PUT", "/aliases/{source}"): (
        Call("PUT", "/aliases/info@example.org", {"destinations": ["john@example.org"]}),
        (403, 403, 200, 200),
    ),
    ("DELETE", "/aliases/{source}"): (
        Call("DELETE", "/aliases/info@example.org"),
        (403, 403, 200, 200),
    ),
    ("POST", "/aliases/{source}/destinations"): (
        Call("POST", "/aliases/info@example.org/destinations", {"destination": "x@ext.net"}),
        (403, 403, 200, 200),
    ),
    ("DELETE", "/aliases/{source}/destinations/{destination}"): (
        Call("DELETE", "/aliases/info@example.org/destinations/boss@ext.net"),
        (403, 403, 200, 200),
    ),
    # Neither scoped key may send as john@ (no send_as); the admin may, and is then told
    # that this service has no submission account (422, before any SMTP traffic).
    ("POST", "/send"): (
        Call("POST", "/send", {"from": "john@example.org", "to": ["x@ext.net"], "text": "hi"}),
        (403, 403, 403, 422),
    ),
    ("POST", "/keys"): (
        Call("POST", "/keys", {"name": "k", "domains": ["example.org"]}),
        (403, 403, 403, 201),
    ),
    ("GET", "/keys"): (Call("GET", "/keys"), (403, 403, 403, 200)),
    ("GET", "/keys/{key_id}"): (Call("GET", "/keys/{spare}"), (403, 403, 403, 200)),
    ("DELETE", "/keys/{key_id}"): (Call("DELETE", "/keys/{spare}"), (403, 403, 403, 200)),
    ("GET", "/audit"): (Call("GET", "/audit"), (403, 403, 403, 200)),
    ("GET", "/metrics"): (Call("GET", "/metrics"), (403, 403, 403, 200)),
}


def guarded_routes(app: FastAPI) -> list[RouteContext]:
    return [r for r in api_routes(app) if r.path not in UNAUTHENTICATED]


def test_matrix_covers_every_route(app: FastAPI) -> None:
    routes = {(method, r.path) for r in guarded_routes(app) for method in r.methods}
    assert routes == set(MATRIX), "a route was added or removed without an authorization decision"


def test_every_route_declares_one_access_level(app: FastAPI) -> None:
    levels = {id(ADMIN): "admin", id(WRITE): "write", id(READ): "read"}
    for route in guarded_routes(app):
        # The API router adds READ (authentication) to all; each route adds its own level.
        declared = [levels[id(d)] for d in route.dependencies if id(d) in levels]
        assert declared[0] == "read", route.path
        assert len(declared) == 2, (route.path, declared)


@pytest.fixture
def matrix_app(settings: Settings, engine: Engine) -> Iterator[FastAPI]:
    # Hundreds of deliberate bad keys from one client: keep the brute-force block out of it.
    # DNS checks ask a closed loopback port, briefly: their answers are not the point here.
    app = create_app(
        settings.model_copy(
            update={
                "AUTH_FAILURE_LIMIT": 100000,
                "DNS_RESOLVERS": ["127.0.0.1:9"],
                "DNS_TIMEOUT": 0.2,
            }
        )
    )
    yield app
    app.state.engine.dispose()
    empty_database(engine)


def _world(client: TestClient, engine: Engine) -> dict[str, str]:
    """Two domains with content, and one key of each kind."""
    admin = bearer(make_key(engine, name="setup"))
    for path, body in [
        ("/domains", {"name": "example.org"}),
        ("/domains", {"name": "other.org"}),
        ("/mailboxes", {"address": "john@example.org", "password": "pw"}),
        ("/mailboxes", {"address": "jane@other.org", "password": "pw"}),
        (
            "/aliases",
            {"source": "info@example.org", "destinations": ["john@example.org", "boss@ext.net"]},
        ),
        ("/domains/example.org/dkim", {"algorithm": "ed25519", "selector": "now"}),  # active
        ("/domains/example.org/dkim", {"algorithm": "ed25519", "selector": "next"}),  # pending
    ]:
        assert client.post(path, json=body, headers=admin).status_code == 201, body
    revoked = make_key(engine, name="revoked", admin=True)
    assert client.delete(f"/keys/{revoked.split('_')[1]}", headers=admin).status_code == 200
    past = datetime.now(UTC) - timedelta(seconds=1)
    return {
        "none": "",
        "malformed": "not-a-key",
        "unknown": "mpk_0123456789abcdef_" + "A" * 43,
        "revoked": revoked,
        "expired": make_key(engine, name="expired", admin=True, expires_at=past),
        "read_only": make_key(engine, name="ro", domains=["example.org"], read_only=True),
        "other_domain": make_key(engine, name="other", domains=["other.org"]),
        "right_domain": make_key(engine, name="right", domains=["example.org"]),
        "admin": make_key(engine, name="admin"),
        "spare": make_key(engine, name="spare", domains=["other.org"]).split("_")[1],
    }


@pytest.mark.parametrize("route", list(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_answers_each_kind_of_key(
    matrix_app: FastAPI, engine: Engine, route: tuple[str, str]
) -> None:
    call, allowed = MATRIX[route]
    expected = dict(zip(KINDS, (401, 401, 401, 401, 401, *allowed), strict=True))
    with TestClient(matrix_app) as client:
        keys = _world(client, engine)
        for kind in KINDS:
            headers = bearer(keys[kind]) if keys[kind] else {}
            response = client.request(
                call.method, call.url(keys["spare"]), json=call.body, headers=headers
            )
            assert response.status_code == expected[kind], (kind, response.text)
            success = "text/plain" if call.path == "/metrics" else "application/json"
            assert response.headers["content-type"].startswith(
                "application/problem+json" if response.status_code >= 400 else success
            )
            if response.status_code == 401:
                assert response.headers["www-authenticate"].startswith("Bearer")
            if response.status_code < 300 and call.method != "GET":
                empty_database(engine)  # the change went through: start the next kind afresh
                keys = _world(client, engine)


# ---------------------------------------------------------------- domain scope


@pytest.fixture
def tenants(client: TestClient, engine: Engine) -> TestClient:
    """example.org and other.org with content; returns a client for an example.org key."""
    for path, body in [
        ("/domains", {"name": "example.org"}),
        ("/domains", {"name": "other.org"}),
        ("/mailboxes", {"address": "john@example.org", "password": "pw"}),
        ("/mailboxes", {"address": "jane@other.org", "password": "pw"}),
        ("/mailboxes", {"address": "jim@other.org", "password": "pw"}),
        ("/aliases", {"source": "info@other.org", "destinations": ["jane@other.org"]}),
        ("/aliases", {"source": "@other.org", "destinations": ["jane@other.org"]}),
        ("/aliases", {"source": "help@example.org", "destinations": ["john@example.org"]}),
    ]:
        assert client.post(path, json=body).status_code == 201, body
    scoped = TestClient(client.app, headers=bearer(make_key(engine, domains=["example.org"])))
    return scoped


def test_scoped_key_lists_only_own_domain(tenants: TestClient) -> None:
    domains = tenants.get("/domains").json()
    assert [d["name"] for d in domains["items"]] == ["example.org"] and domains["total"] == 1
    mailboxes = tenants.get("/mailboxes").json()
    assert [m["address"] for m in mailboxes["items"]] == ["john@example.org"]
    assert mailboxes["total"] == 1
    aliases = tenants.get("/aliases").json()
    assert [a["source"] for a in aliases["items"]] == ["help@example.org"]
    assert aliases["total"] == 1
    # Searches and filters never reach past the scope either.
    assert tenants.get("/mailboxes", params={"q": "other.org"}).json()["total"] == 0
    assert tenants.get("/aliases", params={"destination": "jane@other.org"}).json()["total"] == 0
    assert tenants.get("/domains", params={"q": "other"}).json()["total"] == 0


def test_scoped_key_cannot_tell_existing_from_missing(tenants: TestClient) -> None:
    def answer(method: str, path: str, **kwargs: Any) -> tuple[int, str, str]:
        response = tenants.request(method, path, **kwargs)
        body = response.json()
        return response.status_code, body["type"], body["detail"].replace(path.split("/")[2], "X")

    pairs = [
        ("GET", "/mailboxes/jane@other.org", "/mailboxes/ghost@other.org"),
        ("PATCH", "/mailboxes/jane@other.org", "/mailboxes/ghost@other.org"),
        ("DELETE", "/mailboxes/jane@other.org", "/mailboxes/ghost@other.org"),
        ("GET", "/aliases/info@other.org", "/aliases/nobody@other.org"),
        ("PUT", "/aliases/info@other.org", "/aliases/nobody@other.org"),
        ("DELETE", "/aliases/info@other.org", "/aliases/nobody@other.org"),
        ("GET", "/domains/other.org", "/domains/not-hosted.org"),
    ]
    for method, existing, missing in pairs:
        body = {"quota": 1} if method == "PATCH" else None
        if method == "PUT":
            body = {"destinations": ["x@ext.net"]}
        a = answer(method, existing, json=body)
        b = answer(method, missing, json=body)
        assert a[0] == b[0] == 403, (method, existing)
        assert a[1] == b[1] == "urn:mailprov:problem:forbidden"
    # Creating in another domain is refused alike whether or not it is hosted.
    for address in ["new@other.org", "new@not-hosted.org"]:
        response = tenants.post("/mailboxes", json={"address": address, "password": "pw"})
        assert response.status_code == 403
        assert response.json()["errors"][0]["field"] == "address"


def test_scoped_key_changes_nothing_outside(tenants: TestClient, engine: Engine) -> None:
    before = sql(engine, "SELECT email, quota, password FROM virtual_users ORDER BY email")
    before_aliases = sql(engine, "SELECT source, destination FROM virtual_aliases ORDER BY id")
    tenants.patch("/mailboxes/jane@other.org", json={"quota": 5})
    tenants.delete("/mailboxes/jane@other.org", params={"cascade": True})
    tenants.delete("/aliases/info@other.org")
    tenants.post("/aliases/info@other.org/destinations", json={"destination": "x@ext.net"})
    tenants.delete("/domains/other.org", params={"cascade": True})
    assert sql(engine, "SELECT email, quota, password FROM virtual_users ORDER BY email") == before
    assert (
        sql(engine, "SELECT source, destination FROM virtual_aliases ORDER BY id") == before_aliases
    )


def test_scoped_key_delivers_only_to_own_or_external_domains(tenants: TestClient) -> None:
    ok = tenants.post(
        "/aliases",
        json={"source": "fw@example.org", "destinations": ["a@ext.net", "john@example.org"]},
    )
    assert ok.status_code == 201
    refused = tenants.post(
        "/aliases", json={"source": "sneak@example.org", "destinations": ["jane@other.org"]}
    )
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["field"] == "destinations"


def test_scoped_key_delete_referenced_from_outside_names_nobody(
    client: TestClient, tenants: TestClient
) -> None:
    # An admin pointed another domain's alias at john@; the scoped key may not learn its name.
    assert (
        client.put(
            "/aliases/info@other.org", json={"destinations": ["john@example.org"]}
        ).status_code
        == 200
    )
    for cascade in (False, True):
        response = tenants.delete("/mailboxes/john@example.org", params={"cascade": cascade})
        assert response.status_code == 409
        assert "other.org" not in response.text and "info@" not in response.text
    assert client.get("/mailboxes/john@example.org").status_code == 200


def test_scoped_key_cannot_create_domains_or_keys(tenants: TestClient) -> None:
    assert tenants.post("/domains", json={"name": "mine.org"}).status_code == 403
    assert tenants.post("/keys", json={"name": "x", "admin": True}).status_code == 403
    assert tenants.get("/audit").status_code == 403


def test_read_only_key_reads_but_never_writes(client: TestClient, engine: Engine) -> None:
    client.post("/domains", json={"name": "example.org"})
    reader = TestClient(client.app, headers=bearer(make_key(engine, admin=True, read_only=True)))
    assert reader.get("/domains/example.org").status_code == 200
    assert reader.get("/keys").status_code == 200
    for path, body in [
        ("/mailboxes", {"address": "a@example.org", "password": "pw"}),
        ("/domains", {"name": "new.org"}),
        ("/keys", {"name": "escalate", "admin": True}),
    ]:
        response = reader.post(path, json=body)
        assert response.status_code == 403, path
        assert response.json()["detail"] == "this key is read-only"
    assert reader.delete("/domains/example.org").status_code == 403
