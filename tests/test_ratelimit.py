"""The per-key /send rate limit: counted in the database, so every running copy
shares it; RateLimit-* on answers, 429 + Retry-After past the limit."""

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import trustme
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app import ratelimit
from app.config import Settings
from app.db import open_session
from app.metrics import SENDS
from tests.helpers import bearer, make_key, sql
from tests.sending import message, send_app
from tests.smtpd import SubmissionServer, submission_server

pytestmark = pytest.mark.usefixtures("empty_after")


@pytest.fixture
def smtp(ca: trustme.CA, ca_file: str) -> Iterator[SubmissionServer]:
    with submission_server(ca, ca_file) as server:
        yield server


@contextmanager
def limited(
    settings: Settings, smtp: SubmissionServer, key: str, limit: int
) -> Iterator[TestClient]:
    """A client of an app of its own, as one running copy with this send limit."""
    app = send_app(settings, smtp, SEND_RATE_LIMIT=limit, SEND_RATE_WINDOW=60)
    try:
        with TestClient(app, headers=bearer(key)) as client:
            yield client
    finally:
        app.state.engine.dispose()


def test_limit_counts_down_then_refuses(
    settings: Settings, smtp: SubmissionServer, engine: Engine
) -> None:
    key = make_key(engine, name="mailer", send_as=["@example.org"])
    with limited(settings, smtp, key, 3) as client:
        answers = [client.post("/send", json=message()) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert {a.headers["ratelimit-limit"] for a in answers} == {"3"}
    assert {a.headers["ratelimit-policy"] for a in answers} == {"3;w=60"}
    # Three messages per 60 s are 20 s apart: the next one is allowed 20 s on.
    refused = answers[3]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "urn:mailprov:problem:rate-limited"
    assert 19 <= int(refused.headers["retry-after"]) <= 20
    assert 59 <= int(refused.headers["ratelimit-reset"]) <= 60
    assert len(smtp.transcript.received) == 3  # the refused one never reached SMTP
    audit = sql(engine, "SELECT outcome, status FROM mailprov_audit ORDER BY id")
    assert audit[-1] == ("rate-limited", 429)


def test_limit_is_per_key_and_shared_by_copies(
    settings: Settings, smtp: SubmissionServer, engine: Engine
) -> None:
    first = make_key(engine, name="first", send_as=["@example.org"])
    second = make_key(engine, name="second", send_as=["@example.org"])
    # Two app instances on one database stand for two running copies.
    with limited(settings, smtp, first, 2) as one, limited(settings, smtp, first, 2) as two:
        assert one.post("/send", json=message()).status_code == 200
        assert two.post("/send", json=message()).status_code == 200
        assert one.post("/send", json=message()).status_code == 429
        assert two.post("/send", json=message()).status_code == 429
        other = two.post("/send", json=message(), headers=bearer(second))
        assert other.status_code == 200 and other.headers["ratelimit-remaining"] == "1"


def test_concurrent_sends_through_two_copies_never_exceed_the_limit(
    settings: Settings, smtp: SubmissionServer, engine: Engine
) -> None:
    key = make_key(engine, name="burst", send_as=["@example.org"])
    with limited(settings, smtp, key, 5) as one, limited(settings, smtp, key, 5) as two:
        # FastAPI builds its routes on first use, under warnings.catch_warnings(), which is
        # not thread-safe: with pytest's warnings-as-errors, two clients' event loops doing
        # it at once turn a suppressed warning into a 500. uvicorn has one loop per process.
        for client in (one, two):
            assert client.post("/send", json={}).status_code == 422  # not counted
        barrier = threading.Barrier(12, timeout=30)

        def send(i: int) -> int:
            barrier.wait()  # the key's first message races for the counter row, too
            return (one if i % 2 else two).post("/send", json=message()).status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            outcomes = Counter(pool.map(send, range(12)))
    assert outcomes == {200: 5, 429: 7}
    assert len(smtp.transcript.received) == 5
    assert len(sql(engine, "SELECT key_id FROM mailprov_send_rate")) == 1


def test_replays_do_not_count_and_a_refusal_frees_the_idempotency_key(
    settings: Settings, smtp: SubmissionServer, engine: Engine
) -> None:
    key = make_key(engine, name="idem", send_as=["@example.org"])
    with limited(settings, smtp, key, 1) as client:
        once = {"Idempotency-Key": "order-1"}
        assert client.post("/send", json=message(), headers=once).status_code == 200
        replay = client.post("/send", json=message(), headers=once)
        assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
        later = {"Idempotency-Key": "order-2"}
        assert client.post("/send", json=message(), headers=later).status_code == 429
        # The window has passed (the counter is what says so): the same key goes through.
        sql(engine, "UPDATE mailprov_send_rate SET tat = 0")
        assert client.post("/send", json=message(), headers=later).status_code == 200
    assert len(smtp.transcript.received) == 2


def test_limit_zero_turns_it_off(
    settings: Settings, smtp: SubmissionServer, engine: Engine
) -> None:
    key = make_key(engine, name="free", send_as=["@example.org"])
    with limited(settings, smtp, key, 0) as client:
        answers = [client.post("/send", json=message()) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all("ratelimit-limit" not in a.headers for a in answers)
    assert sql(engine, "SELECT * FROM mailprov_send_rate") == []


def test_sends_are_counted_by_outcome(
    settings: Settings, smtp: SubmissionServer, engine: Engine
) -> None:
    key = make_key(engine, name="counted", send_as=["@example.org"])

    def count(outcome: str) -> float:
        return SENDS.labels(outcome)._value.get()

    before = {name: count(name) for name in ("queued", "rate-limited", "send-not-allowed")}
    with limited(settings, smtp, key, 1) as client:
        client.post("/send", json=message())
        client.post("/send", json=message())
        client.post("/send", json=message(**{"from": {"address": "x@other.org"}}))
    after = {name: count(name) for name in before}
    assert {name: after[name] - before[name] for name in before} == {
        "queued": 1,
        "rate-limited": 1,
        "send-not-allowed": 1,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * ratelimit.MICROS

    def __call__(self) -> int:
        return self.now


def test_gcra_bursts_then_spaces_messages(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(ratelimit, "_now_micros", clock)

    def take() -> int | None:
        with open_session(engine, write=True) as session:
            try:
                return ratelimit.take(session, "k1", limit=4, window=60).remaining
            except ratelimit.RateLimited:
                return None

    assert [take() for _ in range(5)] == [3, 2, 1, 0, None]  # a burst of the whole limit
    clock.now += 14 * ratelimit.MICROS  # 4 per 60 s: one comes back every 15 s
    assert take() is None
    clock.now += 1 * ratelimit.MICROS
    assert [take(), take()] == [0, None]
    clock.now += 60 * ratelimit.MICROS  # idle for a whole window: the whole burst is back
    assert [take() for _ in range(5)] == [3, 2, 1, 0, None]
