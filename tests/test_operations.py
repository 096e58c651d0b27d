"""Operational behaviour: request ids and the request body cap."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.config import Settings
from app.main import create_app
from tests.helpers import bearer, empty_database, make_key


def test_every_answer_carries_a_request_id(client: TestClient, anonymous: TestClient) -> None:
    answers = [client.get("/domains"), client.get("/nope"), anonymous.get("/domains"),
               anonymous.get("/health")]  # fmt: skip
    ids = [answer.headers["x-request-id"] for answer in answers]
    assert all(len(i) == 32 for i in ids) and len(set(ids)) == len(ids)


def test_request_id_given_is_kept_and_named_in_problems(client: TestClient) -> None:
    response = client.get("/domains/not_a_domain", headers={"X-Request-ID": "trace-4711.a_b"})
    assert response.headers["x-request-id"] == "trace-4711.a_b"
    assert response.json()["request_id"] == "trace-4711.a_b"
    # An id that could inject into logs or headers is replaced, not echoed.
    odd = client.get("/domains", headers={"X-Request-ID": "a b;<script>" + "x" * 80})
    assert odd.headers["x-request-id"] != "a b;<script>" and len(odd.headers["x-request-id"]) == 32


@pytest.fixture
def small(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"MAX_BODY_BYTES": 2048}))
    with TestClient(app, headers=bearer(make_key(engine, name="small"))) as client:
        yield client
    app.state.engine.dispose()
    empty_database(engine)


def test_body_over_the_cap_is_413(small: TestClient) -> None:
    big = b'{"name": "' + b"a" * 4000 + b'.org"}'
    response = small.post("/domains", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:mailprov:problem:payload-too-large"
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_chunked_body_over_the_cap_is_413(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):
            yield b"a" * 500
        yield b'.org"}'

    response = small.post(
        "/domains", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_chunked_body_under_the_cap_is_read(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": '
        yield b'"example.org"}'

    response = small.post(
        "/domains", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("path", ["/domains", "/mailboxes", "/aliases", "/keys", "/audit"])
def test_total_false_skips_the_count_and_pages_the_same(client: TestClient, path: str) -> None:
    for name in ("a.org", "b.org", "c.org"):
        assert client.post("/domains", json={"name": name}).status_code == 201
        mailbox = {"address": f"x@{name}", "password": "summersun"}
        assert client.post("/mailboxes", json=mailbox).status_code == 201
        alias = {"source": f"y@{name}", "destinations": [f"x@{name}"]}
        assert client.post("/aliases", json=alias).status_code == 201
        key = {"name": f"key-{name}", "domains": [name]}
        assert client.post("/keys", json=key).status_code == 201
    counted = client.get(path, params={"limit": 2}).json()
    uncounted = client.get(path, params={"limit": 2, "total": "false"}).json()
    assert counted["total"] >= 3 and uncounted["total"] is None
    assert uncounted["items"] == counted["items"]
    assert uncounted["next_cursor"] == counted["next_cursor"] is not None
    bad = client.get(path, params={"total": "maybe"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "total"
