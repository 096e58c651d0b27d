"""What an operator sees: Prometheus metrics, logs that carry the request id, and a
500 that still says which request it was."""

import json
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from app.config import Settings
from app.logs import JsonFormatter, RequestIdFilter, TextFormatter
from app.main import create_app
from tests.helpers import bearer, empty_database, make_key
from tests.live import live_server


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests_total(scraped: str, method: str, route: str, status: int) -> float:
    labels = (("method", method), ("route", route), ("status", str(status)))
    return samples(scraped).get(("mailprov_http_requests_total", labels), 0.0)


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    before = client.get("/metrics").text
    client.get("/mailboxes/nobody@example.org")  # 404: no such mailbox
    client.get("/mailboxes/nobody@example.org")
    client.get("/domains")
    client.get("/no/such/route")
    client.request("BREW", "/domains")  # any token is a method; it must not become a label
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    after = response.text

    def delta(method: str, route: str, status: int) -> float:
        return requests_total(after, method, route, status) - requests_total(
            before, method, route, status
        )

    assert delta("GET", "/mailboxes/{address}", 404) == 2
    assert delta("GET", "/domains", 200) == 1
    assert delta("GET", "unmatched", 404) == 1
    assert delta("OTHER", "/domains", 405) == 1 and "BREW" not in after
    assert "nobody@example.org" not in after  # templates, never addresses
    latency = samples(after)
    count = latency[
        ("mailprov_http_request_duration_seconds_count",
         (("method", "GET"), ("route", "/mailboxes/{address}")))
    ]  # fmt: skip
    assert count >= 2


def test_metrics_count_auth_failures(client: TestClient, anonymous: TestClient) -> None:
    def failures(reason: str) -> float:
        scraped = samples(client.get("/metrics").text)
        return scraped.get(("mailprov_auth_failures_total", (("reason", reason),)), 0.0)

    missing, invalid = failures("missing"), failures("invalid")
    anonymous.get("/domains")
    anonymous.get("/domains", headers=bearer("mpk_0123456789abcdef_" + "A" * 43))
    anonymous.get("/domains", headers=bearer("not-a-key"))
    assert failures("missing") - missing == 1
    assert failures("invalid") - invalid == 2


def test_metrics_count_database_errors(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A database that cannot be opened: every request is a 503, counted by kind.
    gone = tmp_path_factory.mktemp("gone") / "no" / "such" / "dir" / "x.db"
    broken = create_app(settings.model_copy(update={"DATABASE_URL": f"sqlite:///{gone}",
                                                    "METRICS": "open"}))  # fmt: skip
    with TestClient(broken) as client:
        before = samples(client.get("/metrics").text)
        answer = client.get("/domains", headers=bearer("mpk_0123456789abcdef_" + "A" * 43))
        after = samples(client.get("/metrics").text)
    assert answer.status_code == 503
    label = ("mailprov_database_errors_total", (("kind", "unavailable"),))
    assert after[label] - before.get(label, 0.0) == 1


@pytest.fixture
def metrics_app(settings: Settings, engine: Engine) -> Iterator[Callable[[str], FastAPI]]:
    """Apps for MAILPROV_METRICS modes, disposed after the test."""
    apps: list[FastAPI] = []

    def make(mode: str) -> FastAPI:
        app = create_app(settings.model_copy(update={"METRICS": mode}))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.state.engine.dispose()
    empty_database(engine)


def test_metrics_exposure_modes(metrics_app: Callable[[str], FastAPI], engine: Engine) -> None:
    make = metrics_app
    reader = bearer(make_key(engine, name="prometheus", admin=True, read_only=True))
    scoped = bearer(make_key(engine, name="scoped", domains=["example.org"]))
    with TestClient(make("key")) as keyed:
        assert keyed.get("/metrics").status_code == 401
        assert keyed.get("/metrics", headers=scoped).status_code == 403
        assert keyed.get("/metrics", headers=reader).status_code == 200
    with TestClient(make("open")) as opened:
        assert opened.get("/metrics").status_code == 200
    with TestClient(make("off")) as off:
        assert off.get("/metrics", headers=reader).status_code == 404
    # Not part of the API document: it is Prometheus' format, not JSON.
    assert "/metrics" not in make("key").openapi()["paths"]


@pytest.mark.slow  # a live server
def test_two_workers_add_up_in_every_scrape(database_url: str, engine: Engine) -> None:
    """A scrape reaches one worker; multiprocess mode makes it report all of them."""
    try:
        with (
            live_server(database_url, workers=2) as live,
            httpx.Client(base_url=live.base, headers=live.headers) as http,
        ):
            # New connections, so the kernel spreads them over both workers.
            for _ in range(40):
                assert httpx.get(live.base + "/domains", headers=live.headers).status_code == 200
            totals = {
                requests_total(http.get("/metrics").text, "GET", "/domains", 200) for _ in range(6)
            }
    finally:
        empty_database(engine)
    assert totals == {40.0}


def test_unexpected_error_is_a_500_problem_with_the_request_id(
    app: FastAPI, admin_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise RuntimeError("something broke")

    app.add_api_route("/boom", boom)
    with TestClient(app, headers=bearer(admin_key)) as client:
        response = client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "req-500"
    assert response.json()["request_id"] == "req-500"
    assert response.json()["type"] == "urn:mailprov:problem:internal"
    assert "something broke" not in response.text
    [logged] = [r for r in caplog.records if r.getMessage() == "unhandled error on GET /boom"]
    assert logged.exc_info is not None


def test_json_formatter_keeps_extra_fields_and_the_request_id() -> None:
    import logging

    record = logging.makeLogRecord(
        {"name": "mailprov.access", "levelname": "INFO", "msg": "GET %s", "args": ("/x",),
         "status": 200, "request_id": "abc"}
    )  # fmt: skip
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "GET /x" and entry["status"] == 200
    assert entry["request_id"] == "abc" and entry["level"] == "info"
    plain = logging.makeLogRecord({"msg": "started"})
    RequestIdFilter().filter(plain)  # outside a request: no id
    assert "request_id" not in json.loads(JsonFormatter().format(plain))
    assert TextFormatter().format(record).endswith("GET /x [abc]")


@pytest.mark.slow  # a live server
def test_live_json_logs_carry_request_ids_and_no_secrets(database_url: str, engine: Engine) -> None:
    password = "Tr0ub4dor&3-horse-battery"
    try:
        with live_server(database_url, log_level="info", MAILPROV_LOG_FORMAT="json") as live:
            http = httpx.Client(base_url=live.base, headers=live.headers)
            http.post("/domains", json={"name": "logs.example"}, headers={"X-Request-ID": "rq-1"})
            http.post("/mailboxes", json={"address": "a@logs.example", "password": password},
                      headers={"X-Request-ID": "rq-2"})  # fmt: skip
            http.get("/domains", headers={**bearer("mpk_0123456789abcdef_" + "B" * 43),
                                         "X-Request-ID": "rq-3"})  # fmt: skip
            http.close()
            output = live.output()
    finally:
        empty_database(engine)
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # all JSON
    access = {entry["request_id"]: entry for entry in lines if entry["logger"] == "mailprov.access"}
    assert access["rq-1"]["status"] == 201 and access["rq-1"]["route"] == "/domains"
    assert access["rq-2"]["path"] == "/mailboxes" and access["rq-2"]["method"] == "POST"
    assert access["rq-3"]["status"] == 401
    assert any(entry["logger"].startswith("uvicorn") for entry in lines)  # uvicorn's own, too
    assert password not in output
    assert live.headers["Authorization"].split()[1] not in output
    assert "B" * 43 not in output
