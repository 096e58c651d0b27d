"""mailprov on a multi-primary MariaDB Galera cluster (issue 20): three nodes, every
one written to at once, through three copies (copy N pinned to node N) and HAProxy.

Galera certifies a transaction at COMMIT against what the other nodes committed
meanwhile and answers a conflict as a deadlock (1213); a lock row that is only
selected FOR UPDATE locks one node. What must hold anyway:

- the races of tests/test_concurrency.py, their requests spread over the three
  nodes: one winner and clean 409s, never a 5xx; alias edits that would close a
  loop across nodes are refused, and no node ever holds a cycle;
- /send's Idempotency-Key, its per-key rate limit and the brute-force count of
  failed keys are one count for the whole cluster;
- a node killed under load: every request answered (2xx, or 503 with
  Retry-After), every write answered 2xx readable from every node afterwards,
  and the node rejoins;
- a copy killed: HAProxy sends its requests to the others.
"""

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests import test_concurrency as races
from tests.galera.conftest import REPORT, SEND_RATE_LIMIT, Cluster, Spread, unique

pytestmark = [pytest.mark.galera, pytest.mark.slow]

PROBLEM = "urn:mailprov:problem:"


@contextmanager
def counted(test: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Count every request the reused race tests send (their fire and setup)."""
    fire, setup = races.fire, races.setup

    def counting_fire(live: Any, calls: list[races.Call]) -> list[httpx.Response]:
        responses = fire(live, calls)
        REPORT.count(test, responses)
        return responses

    def counting_setup(live: Any, *calls: races.Call) -> None:
        setup(live, *calls)
        REPORT.count(test, [httpx.Response(201)] * len(calls))

    monkeypatch.setattr(races, "fire", counting_fire)
    monkeypatch.setattr(races, "setup", counting_setup)
    yield


def same_on_every_node(galera: Cluster, statement: str) -> list[tuple[Any, ...]]:
    rows = [sorted(galera.sql(node, statement)) for node in range(3)]
    assert rows[0] == rows[1] == rows[2], rows
    return rows[0]


def test_same_create_raced_across_nodes_makes_one_row(
    galera: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    with counted("create races", monkeypatch):
        races.test_same_create_raced_makes_one_row(galera.spread(), galera.node_urls[0])
    # What node 1 was found to hold, every node holds.
    assert same_on_every_node(galera, "SELECT name FROM virtual_domains") == [("race.example",)]
    assert len(same_on_every_node(galera, "SELECT source, destination FROM virtual_aliases")) == 4


@pytest.mark.parametrize("round_", [1, 2])
def test_alias_edits_raced_across_nodes_never_build_a_loop(
    galera: Cluster, monkeypatch: pytest.MonkeyPatch, round_: int
) -> None:
    with counted("alias-loop races", monkeypatch):
        races.test_concurrent_alias_edits_never_build_a_loop(galera.spread(), galera.node_urls[0])
    for engine in galera.engines:
        races.assert_no_cycle(engine)
    same_on_every_node(galera, "SELECT source, destination FROM virtual_aliases")


def message(subject: str) -> dict[str, Any]:
    # No credentials: the copies relay with the service's account (conftest).
    return {"from": "john@example.org", "to": ["lisa@ext.net"], "subject": subject, "text": "Hi"}


def received(galera: Cluster, subject: str) -> int:
    with galera.smtp.transcript.lock:
        return sum(1 for r in galera.smtp.transcript.received if r.message["Subject"] == subject)


def test_send_idempotency_key_raced_across_nodes_sends_once(
    galera: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    subject = unique("idempotent")
    idem = {"Idempotency-Key": subject}
    spread = Spread(galera.copies, galera.headers | idem)
    with counted("idempotency race", monkeypatch):
        responses = races.fire(spread, [("POST", "/send", message(subject))] * races.RACERS)
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 409}, [(r.status_code, r.text) for r in responses]
    first = [
        r for r in responses if r.status_code == 200 and "idempotent-replayed" not in r.headers
    ]
    assert len(first) == 1, statuses
    for other in responses:
        if other.status_code == 409:
            assert races.problem_type(other) == "idempotency-in-flight", other.text
        elif other is not first[0]:
            assert other.json()["message_id"] == first[0].json()["message_id"]
    assert received(galera, subject) == 1
    # Asked again through every copy (every node): the first answer, nothing sent again.
    for base in galera.copies:
        again = httpx.post(
            base + "/send", headers=spread.headers, json=message(subject), timeout=30
        )
        REPORT.count("idempotency race", [again])
        assert again.status_code == 200, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["message_id"] == first[0].json()["message_id"]
    assert received(galera, subject) == 1


def test_send_rate_limit_raced_across_nodes_is_one_count(
    galera: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = galera.new_key(name=unique("mailer"))
    subject = unique("limited")
    with counted("rate-limit race", monkeypatch):
        responses = races.fire(
            galera.spread(key), [("POST", "/send", message(subject))] * races.RACERS
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: SEND_RATE_LIMIT, 429: races.RACERS - SEND_RATE_LIMIT}, [
        (r.status_code, r.text) for r in responses
    ]
    for refused in (r for r in responses if r.status_code == 429):
        assert races.problem_type(refused) == "rate-limited"
        assert int(refused.headers["retry-after"]) >= 1
    assert received(galera, subject) == SEND_RATE_LIMIT


def test_failed_keys_counted_across_nodes_block_on_every_node(
    galera: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each copy trusts X-Forwarded-For from loopback (--proxy-headers), so this test
    # has a client address of its own (TEST-NET-1) and blocks nobody else.
    client = f"192.0.2.{uuid.uuid4().int % 250 + 1}"
    limit = 20  # MAILPROV_AUTH_FAILURE_LIMIT's default
    bad = Spread(galera.copies, {"Authorization": "Bearer mpk_0000000000000000_bad",
                                 "X-Forwarded-For": client})  # fmt: skip
    with counted("brute-force race", monkeypatch):
        responses = races.fire(bad, [("GET", "/domains", None)] * (limit - 1))
    assert Counter(r.status_code for r in responses) == {401: limit - 1}
    # No failure lost to a concurrent update on another node.
    for node in range(3):
        assert galera.sql(
            node, "SELECT failures FROM mailprov_auth_failures WHERE client = :c", c=client
        ) == [(limit - 1,)]
    last = httpx.get(galera.copies[0] + "/domains", headers=bad.headers, timeout=30)
    assert last.status_code == 429, last.text
    # Blocked through every copy, whatever key it sends now.
    for base in galera.copies:
        answer = httpx.get(
            base + "/domains", headers=galera.headers | {"X-Forwarded-For": client}, timeout=30
        )
        REPORT.count("brute-force race", [last, answer])
        assert answer.status_code == 429, answer.text
        assert races.problem_type(answer) == "too-many-failures"


# ------------------------------------------------------------------ failures

LOAD_THREADS = 8
LOAD_MAX_REQUESTS = 4000
LOAD_MAX_SECONDS = 90
KILL_AFTER = 150  # answers before node 2 is killed
AFTER_REJOIN = 150  # answers after node 2 is back before the load stops


class Load:
    """Bounded load through HAProxy: mailbox creates and domain reads, from threads."""

    def __init__(self, galera: Cluster, domain: str) -> None:
        self.galera, self.domain = galera, domain
        self.lock = threading.Lock()
        self.answers: list[tuple[str, str, int, str | None]] = []  # op, address, status, R-A
        self.errors: list[str] = []
        self.sent = 0
        self.stop_after: int | None = None
        self.deadline = time.monotonic() + LOAD_MAX_SECONDS

    def next_index(self) -> int | None:
        with self.lock:
            limit = LOAD_MAX_REQUESTS if self.stop_after is None else self.stop_after
            if self.sent >= limit or time.monotonic() > self.deadline:
                return None
            self.sent += 1
            return self.sent

    def answered(self) -> int:
        with self.lock:
            return len(self.answers) + len(self.errors)

    def worker(self) -> None:
        with httpx.Client(base_url=self.galera.url, headers=self.galera.headers, timeout=60) as c:
            while (i := self.next_index()) is not None:
                address = f"user{i}@{self.domain}"
                try:
                    if i % 3:
                        op = "create"
                        body = {"address": address, "password": "summersun"}
                        response = c.post("/mailboxes", json=body)
                    else:
                        op = "read"
                        response = c.get(f"/domains/{self.domain}")
                except httpx.HTTPError as error:
                    with self.lock:
                        self.errors.append(f"{type(error).__name__}: {error}")
                    continue
                with self.lock:
                    retry_after = response.headers.get("retry-after")
                    self.answers.append((op, address, response.status_code, retry_after))


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds:.0f} s: {what}"
        time.sleep(0.1)


def haproxy_status(galera: Cluster) -> dict[str, str]:
    csv = httpx.get(galera.env["MAILPROV_HA_STATS_URL"] + ";csv", timeout=10).text
    status = {}
    for line in csv.splitlines()[1:]:
        cells = line.split(",")
        if len(cells) > 17 and cells[1] not in ("FRONTEND", "BACKEND"):
            status[f"{cells[0]}/{cells[1]}"] = cells[17]
    return status


def test_node_killed_under_load_every_request_answered_and_it_rejoins(galera: Cluster) -> None:
    domain = unique("load") + ".example"
    created = httpx.post(galera.url + "/domains", headers=galera.headers,
                         json={"name": domain}, timeout=30)  # fmt: skip
    assert created.status_code == 201, created.text
    load = Load(galera, domain)
    killed = rejoined = 0.0

    def chaos() -> None:
        nonlocal killed, rejoined
        wait_for(lambda: load.answered() >= KILL_AFTER, LOAD_MAX_SECONDS, "the first answers")
        galera.sh("kill-node", "2")
        killed = time.monotonic()
        time.sleep(3)  # the cluster goes on with two nodes for a while
        galera.sh("start-node", "2")
        rejoined = time.monotonic()
        with load.lock:
            load.stop_after = load.sent + AFTER_REJOIN

    with ThreadPoolExecutor(max_workers=LOAD_THREADS + 1) as pool:
        chaos_done = pool.submit(chaos)
        workers = [pool.submit(load.worker) for _ in range(LOAD_THREADS)]
        for future in [chaos_done, *workers]:
            future.result()
    assert killed and rejoined, "the node was never killed and restarted"
    REPORT.count("node kill", [httpx.Response(s) for _, _, s, _ in load.answers])

    assert load.errors == [], load.errors[:5]  # every request got an HTTP answer
    statuses = Counter(s for _, _, s, _ in load.answers)
    assert set(statuses) <= {200, 201, 503}, statuses
    for op, address, status, retry_after in load.answers:
        if status == 503:
            assert retry_after is not None and int(retry_after) >= 1, (op, address)
    assert statuses[201] > 0 and statuses[200] > 0, statuses

    # Node 2 is back in sync: HAProxy sees every node and copy up again.
    wait_for(lambda: set(haproxy_status(galera).values()) == {"UP"}, 30, "every server UP")
    # Every write that was answered 201 is there, on every node (node 2 by IST).
    written = {
        address for op, address, status, _ in load.answers if op == "create" and status == 201
    }
    for node in range(3):
        rows = galera.sql(
            node,
            "SELECT u.email FROM virtual_users u JOIN virtual_domains d ON u.domain_id = d.id "
            "WHERE d.name = :d",
            d=domain,
        )
        held = {email for (email,) in rows}
        assert written <= held, f"node {node + 1} lacks {sorted(written - held)[:5]}"
    same_on_every_node(galera, "SELECT email FROM virtual_users")
    REPORT.writes_checked += len(written)


def test_copy_killed_haproxy_routes_around_it(galera: Cluster) -> None:
    galera.sh("kill-copy", "1")
    try:
        # At once, before a health check has noticed: refused connections are re-sent.
        with httpx.Client(base_url=galera.url, headers=galera.headers, timeout=30) as client:
            answers = [client.get("/domains") for _ in range(60)]
        REPORT.count("copy kill", answers)
        assert Counter(a.status_code for a in answers) == {200: 60}
        wait_for(lambda: haproxy_status(galera)["mailprov/copy1"] == "DOWN", 15, "copy1 DOWN")
    finally:
        galera.sh("start-copy", "1")
    wait_for(lambda: haproxy_status(galera)["mailprov/copy1"] == "UP", 15, "copy1 UP again")
