"""Every failure is application/problem+json with a stable type; no input gives a 500."""

import json
from collections.abc import Iterator

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.routing import RouteContext
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InvalidRequestError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.audit import audit_trail
from app.auth import READ
from app.config import Settings
from app.deps import require_json_body
from app.errors import DomainExists
from app.main import create_app
from tests.helpers import api_routes, bearer, sql

PROBLEM = "application/problem+json"
JSON = "application/json"
JUNK_BODIES = [
    b"",
    b"{",
    b"null",
    b"[]",
    b'"x"',
    b"123",
    b'{"name": {"$gt": ""}}',
    b"[" * 5000 + b"]" * 5000,
    json.dumps({"a" * 10: "b" * 100000}).encode(),
    b'{"password": "\x00"}',
    '{"name": "\ud800"}'.encode("utf-8", "surrogatepass"),
]
JUNK_SEGMENTS = ["%00", "x" * 400, "..", "a@b@c", "@", "%F0%9F%92%A9@example.org", "%20"]


def _routes(app: FastAPI) -> list[RouteContext]:
    return api_routes(app)


def _fill(path: str, value: str) -> str:
    parts = []
    for part in path.split("/"):
        parts.append(value if part.startswith("{") else part)
    return "/".join(parts)


def assert_problem(response, status: int | None = None) -> dict:  # type: ignore[no-untyped-def]
    assert response.headers["content-type"] == PROBLEM, response.text
    body = response.json()
    assert body["type"].startswith("urn:mailprov:problem:")
    assert body["status"] == response.status_code
    assert body["title"] and body["detail"]
    if status is not None:
        assert response.status_code == status, body
    return body


def test_unknown_route_is_problem(client: TestClient) -> None:
    body = assert_problem(client.get("/no/such/route"), 404)
    assert body["type"] == "urn:mailprov:problem:route-not-found"


def test_wrong_method_is_problem(client: TestClient) -> None:
    body = assert_problem(client.put("/domains"), 405)
    assert body["type"] == "urn:mailprov:problem:method-not-allowed"


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/domains", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert assert_problem(response, 400)["type"] == "urn:mailprov:problem:malformed-json"


def test_non_json_body_is_415(client: TestClient) -> None:
    for content_type in ["application/x-www-form-urlencoded", "text/plain", ""]:
        response = client.post(
            "/domains", content=b"name=example.org", headers={"content-type": content_type}
        )
        assert (
            assert_problem(response, 415)["type"] == "urn:mailprov:problem:unsupported-media-type"
        )


def test_json_with_charset_accepted(client: TestClient) -> None:
    response = client.post(
        "/domains",
        content=b'{"name": "example.org"}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 201


def test_validation_error_names_field_without_echoing_input(client: TestClient) -> None:
    client.post("/domains", json={"name": "example.org"})
    secret = "s3cr3t-" + "x" * 80
    response = client.post("/mailboxes", json={"address": "a@example.org", "password": secret})
    body = assert_problem(response, 422)
    assert body["errors"] == [
        {
            "field": "password",
            "location": "body",
            "message": "is longer than 72 bytes in UTF-8; bcrypt would ignore the rest",
        }
    ]
    assert "s3cr3t" not in response.text


@pytest.mark.parametrize("body", JUNK_BODIES)
def test_every_body_route_answers_junk_with_problem(client: TestClient, body: bytes) -> None:
    for route in _routes(client.app):  # type: ignore[arg-type]
        for method in route.methods & {"POST", "PUT", "PATCH"}:
            response = client.request(
                method,
                _fill(route.path, "x@example.org"),
                content=body,
                headers={"content-type": "application/json"},
            )
            assert 400 <= response.status_code < 500, (method, route.path, response.text)
            assert_problem(response)


@pytest.mark.parametrize("segment", JUNK_SEGMENTS)
def test_every_path_route_answers_junk_with_problem(client: TestClient, segment: str) -> None:
    for route in _routes(client.app):  # type: ignore[arg-type]
        if "{" not in route.path:
            continue
        for method in route.methods:
            response = client.request(
                method, _fill(route.path, segment), json={"destinations": ["a@example.org"]}
            )
            assert 400 <= response.status_code < 500, (method, route.path, response.text)
            assert_problem(response)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "-1"},
        {"limit": "1e9"},
        {"cursor": "x" * 2000},
        {"cursor": "eyJhZnRlciI6IDF9"},
        {"q": "x" * 500},
        {"domain": "x" * 400},
        {"source": "@"},
        {"destination": "nope"},
    ],
)
def test_every_list_route_answers_bad_query_with_problem(
    client: TestClient, params: dict[str, str]
) -> None:
    for path in ["/domains", "/mailboxes", "/aliases"]:
        response = client.get(path, params=params)
        if response.status_code != 200:  # a filter a list does not have is ignored
            assert_problem(response, 422)


def test_database_down_is_503_with_retry_after() -> None:
    # Nothing listens on port 1: the connection is refused at once.
    settings = Settings(
        DATABASE_URL="mysql+pymysql://root@127.0.0.1:1/mailprov", DATABASE_CONNECT_TIMEOUT=1
    )
    with TestClient(create_app(settings)) as client:
        for method, path, body in [
            ("GET", "/domains", None),
            ("POST", "/domains", {"name": "example.org"}),
            ("GET", "/mailboxes/a@example.org", None),
        ]:
            response = client.request(method, path, json=body)
            problem = assert_problem(response, 503)
            assert problem["type"] == "urn:mailprov:problem:database-unavailable"
            assert response.headers["retry-after"] == "5"
        ready = client.get("/ready")
        assert_problem(ready, 503)
        assert client.get("/health").json() == {"status": "ok"}


def test_ready_when_migrated(client: TestClient) -> None:
    assert client.get("/ready").json() == {"status": "ready"}


# ---------------------------------------------------------------- the audit trail agrees

# Each kind of failure a changing request can end in. The mapping to an answer is
# what is under test, so a route raises each as it would arrive from below.
FAILURES: dict[str, Exception] = {
    "problem": DomainExists("example.org is already hosted", field="name"),
    "integrity": IntegrityError("INSERT ...", {}, Exception("duplicate key")),
    "connection-lost": OperationalError("SELECT 1", {}, Exception("server has gone away")),
    "programming": ProgrammingError("SELECT nope", {}, Exception("no such column")),
    "data": DataError("INSERT ...", {}, Exception("value too long")),
    "pool-exhausted": PoolTimeout("QueuePool limit reached"),
    "orm-misuse": InvalidRequestError("object is not bound to a session"),
    "http": HTTPException(status_code=409, detail="Conflict"),
    "bug": RuntimeError("unexpected"),
}


@pytest.fixture
def failing(app: FastAPI, admin_key: str) -> Iterator[TestClient]:
    """The app with one more changing route, ``POST /fail/{kind}``, under the API's
    router-wide dependencies (the audit trail among them): it raises FAILURES[kind]."""
    router = APIRouter(dependencies=[READ, Depends(require_json_body), Depends(audit_trail)])

    @router.post("/fail/{kind}", operation_id="fail")
    def fail(kind: str) -> None:
        raise FAILURES[kind]

    app.include_router(router)
    with TestClient(app, headers=bearer(admin_key)) as client:
        yield client


def _last_audit_row(engine: Engine) -> tuple[str, int]:
    rows = sql(engine, "SELECT outcome, status FROM mailprov_audit ORDER BY id DESC")
    assert rows, "nothing was audited"
    outcome, status = rows[0]
    return outcome, status


@pytest.mark.parametrize("kind", FAILURES)
def test_audit_row_agrees_with_answer(failing: TestClient, engine: Engine, kind: str) -> None:
    response = failing.post(f"/fail/{kind}", json={})
    body = assert_problem(response)
    assert 400 <= response.status_code < 600
    answered = (body["type"].removeprefix("urn:mailprov:problem:"), response.status_code)
    assert _last_audit_row(engine) == answered


@pytest.mark.parametrize("content", [b'{"name": 5}', b"[]", b'{"name": "example.org", "x": 1}'])
def test_audit_row_agrees_with_refused_body(
    client: TestClient, engine: Engine, content: bytes
) -> None:
    # (Malformed JSON is refused before any dependency runs: nothing to audit.)
    response = client.post("/domains", content=content, headers={"content-type": JSON})
    body = assert_problem(response, 422)
    assert _last_audit_row(engine) == ("validation", 422)
    assert body["type"] == "urn:mailprov:problem:validation"
