"""Races against a real server: two uvicorn worker processes, one database.

Each race releases its requests together (a barrier, after every client has
opened its HTTP connection), so they reach the workers at the same moment and
their transactions overlap in the database. What must hold whatever the order:

- creating the same thing 30 times makes exactly one row; one request wins
  (201/200), every other one is a clean 409 problem+json, never 500 or 503;
- concurrent alias edits can never build a loop: of two (or three) edits that
  together would close a cycle, the last one to commit is refused with 422
  alias-loop, and a walk over virtual_aliases in SQL finds no cycle afterwards.

A burst of writes wider than the threadpool (100 at once, in-process) must
neither stall nor answer 500.

Runs on every backend (SQLite too: two processes, one file, WAL).
"""

import os
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from app.config import Settings
from app.db import create_db_engine
from app.migrate import migrate
from tests.helpers import api_client, sql
from tests.live import Live, live_server

RACERS = 30
PROBLEM = "application/problem+json"
TYPE = "urn:mailprov:problem:"
EXT = "ext.example"  # not hosted: destinations there need not exist

Call = tuple[str, str, dict[str, Any] | None]  # method, path, JSON body


@contextmanager
def engine_for(url: str) -> Iterator[Engine]:
    engine = create_db_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def fire(live: Live, calls: list[Call]) -> list[httpx.Response]:
    """Send all calls at once, one thread and one HTTP connection each (call i to
    ``live.base_for(i)``: the Galera suite spreads them over several copies)."""
    barrier = threading.Barrier(len(calls), timeout=30)

    def one(index: int, call: Call) -> httpx.Response:
        method, path, body = call
        base = live.base_for(index)
        with httpx.Client(base_url=base, headers=live.headers, timeout=60) as client:
            # Open the connection first, so the start line is not a connect race.
            assert client.get("/health").status_code == 200
            barrier.wait()
            return client.request(method, path, json=body)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(one, range(len(calls)), calls))


def setup(live: Live, *calls: Call) -> None:
    with httpx.Client(base_url=live.base, headers=live.headers, timeout=30) as client:
        for method, path, body in calls:
            response = client.request(method, path, json=body)
            assert response.status_code in (200, 201), (path, body, response.text)


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"] == PROBLEM, response.text
    body = response.json()
    assert body["status"] == response.status_code
    return str(body["type"]).removeprefix(TYPE)


def assert_one_winner(
    responses: list[httpx.Response], *, won: int, conflict: str
) -> httpx.Response:
    """Exactly one `won` answer; every other one a 409 problem of type `conflict`."""
    statuses = sorted(r.status_code for r in responses)
    assert all(s in (won, 409) for s in statuses), [(r.status_code, r.text) for r in responses]
    winners = [r for r in responses if r.status_code == won]
    assert len(winners) == 1, statuses
    for loser in responses:
        if loser.status_code == 409:
            assert problem_type(loser) == conflict, loser.text
    return winners[0]


def worker_processes(live: Live) -> int:
    """How many uvicorn worker processes serve `live` (Linux /proc)."""
    port = live.base.rsplit(":", 1)[1].encode()
    procs = [p for p in Path("/proc").iterdir() if p.name.isdigit()]

    def read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError:
            return b""

    serve = [
        p.name
        for p in procs
        if b"serve" in (cmd := read(p / "cmdline")) and b"--port\x00" + port + b"\x00" in cmd
    ]
    assert len(serve) == 1, serve
    children = []
    for p in procs:
        status = read(p / "status").decode(errors="replace")
        ppid = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("PPid:")), "")
        if ppid == serve[0]:
            children.append(read(p / "cmdline"))
    workers = [c for c in children if b"spawn_main" in c]
    # A single-process uvicorn serves from the `mailprov serve` process itself.
    return len(workers) or 1


@pytest.fixture
def live(fresh_database_url: str) -> Iterator[Live]:
    with live_server(fresh_database_url, workers=2) as live:
        yield live


@pytest.mark.slow  # a live server
def test_live_server_really_runs_two_worker_processes(live: Live) -> None:
    assert os.path.isdir("/proc")
    assert worker_processes(live) == 2


@pytest.mark.slow  # a live server
def test_same_create_raced_makes_one_row(live: Live, fresh_database_url: str) -> None:
    # Domain: half the racers spell it differently; canonical form makes it one key.
    spellings = ["race.example", "RACE.Example"]
    responses = fire(
        live, [("POST", "/domains", {"name": spellings[i % 2]}) for i in range(RACERS)]
    )
    winner = assert_one_winner(responses, won=201, conflict="domain-exists")
    assert winner.json()["name"] == "race.example"

    # Mailbox in it.
    mailbox = {"address": "john@race.example", "password": "summersun"}
    responses = fire(live, [("POST", "/mailboxes", mailbox)] * RACERS)
    assert_one_winner(responses, won=201, conflict="mailbox-exists")

    # The same destination added to an existing alias.
    setup(live, ("POST", "/aliases", {"source": "team@race.example", "destinations": [f"a@{EXT}"]}))
    add = ("POST", "/aliases/team@race.example/destinations", {"destination": "john@race.example"})
    responses = fire(live, [add] * RACERS)
    winner = assert_one_winner(responses, won=200, conflict="destination-exists")
    assert winner.json()["destinations"] == [f"a@{EXT}", "john@race.example"]

    # The same alias (two destinations: two rows, never four or sixty).
    alias = {"source": "sales@race.example", "destinations": ["john@race.example", f"b@{EXT}"]}
    responses = fire(live, [("POST", "/aliases", alias)] * RACERS)
    assert_one_winner(responses, won=201, conflict="alias-exists")

    with engine_for(fresh_database_url) as engine:
        assert sql(engine, "SELECT name FROM virtual_domains") == [("race.example",)]
        assert sql(engine, "SELECT email FROM virtual_users") == [("john@race.example",)]
        rows = sql(
            engine,
            "SELECT source, destination FROM virtual_aliases ORDER BY source, destination",
        )
        assert rows == [
            ("sales@race.example", f"b@{EXT}"),
            ("sales@race.example", "john@race.example"),
            ("team@race.example", f"a@{EXT}"),
            ("team@race.example", "john@race.example"),
        ]
        # Every row belongs to the one domain row (domain_id derived, not raced).
        assert sql(
            engine,
            "SELECT COUNT(*) FROM virtual_aliases a JOIN virtual_domains d ON a.domain_id = d.id "
            "WHERE d.name = 'race.example'",
        ) == [(4,)]


# Every (origin, node) pair such that node is reachable from origin through alias rows.
# UNION (not UNION ALL) makes the recursion stop even if the graph had a cycle. A row
# naming its own source ("keep a copy" beside a mailbox) is delivery, not a loop.
REACHABLE = """
WITH RECURSIVE reach(origin, node) AS (
    SELECT source, destination FROM virtual_aliases WHERE destination <> source
    UNION
    SELECT r.origin, a.destination
    FROM reach r JOIN virtual_aliases a ON a.source = r.node
    WHERE a.destination <> a.source
)
SELECT DISTINCT origin FROM reach WHERE node = origin
"""


def assert_no_cycle(engine: Engine) -> None:
    assert sql(engine, REACHABLE) == []
    # The same answer from a walk in Python over the same rows.
    edges: dict[str, set[str]] = {}
    for source, destination in sql(engine, "SELECT source, destination FROM virtual_aliases"):
        if source != destination:
            edges.setdefault(source, set()).add(destination)
    for start in edges:
        seen: set[str] = set()
        frontier = set(edges[start])
        while frontier:
            assert start not in frontier, f"{start} reaches itself"
            seen |= frontier
            frontier = {n for f in frontier for n in edges.get(f, ())} - seen


@pytest.mark.slow  # a live server
def test_concurrent_alias_edits_never_build_a_loop(live: Live, fresh_database_url: str) -> None:
    d = "loop.example"
    pairs = range(RACERS)  # a_i -> b_i against b_i -> a_i
    triangles = range(RACERS // 3)  # c_i -> d_i, d_i -> e_i, e_i -> c_i
    setup(
        live,
        ("POST", "/domains", {"name": d}),
        *[
            ("POST", "/aliases", {"source": f"{n}{i}@{d}", "destinations": [f"{n}{i}@{EXT}"]})
            for i in pairs
            for n in "ab"
        ],
        *[
            ("POST", "/aliases", {"source": f"{n}{i}@{d}", "destinations": [f"{n}{i}@{EXT}"]})
            for i in triangles
            for n in "cde"
        ],
    )

    def add(source: str, destination: str) -> Call:
        path = f"/aliases/{source}@{d}/destinations"
        return ("POST", path, {"destination": f"{destination}@{d}"})

    # 30 pairs, in bursts of 30 requests (15 pairs each). Either edit alone is fine;
    # both together would loop, so exactly one of each pair must be refused.
    half = RACERS // 2
    for burst in (pairs[:half], pairs[half:]):
        calls = [c for i in burst for c in (add(f"a{i}", f"b{i}"), add(f"b{i}", f"a{i}"))]
        responses = fire(live, calls)
        for k in range(len(burst)):
            pair = responses[2 * k : 2 * k + 2]
            assert sorted(r.status_code for r in pair) == [200, 422], [r.text for r in pair]
            loser = next(r for r in pair if r.status_code == 422)
            assert problem_type(loser) == "alias-loop", loser.text

    # 10 triangles at once (30 requests): any two edges are a path, the third closes it.
    calls = [
        c
        for i in triangles
        for c in (add(f"c{i}", f"d{i}"), add(f"d{i}", f"e{i}"), add(f"e{i}", f"c{i}"))
    ]
    responses = fire(live, calls)
    for k in range(len(triangles)):
        triangle = responses[3 * k : 3 * k + 3]
        statuses = sorted(r.status_code for r in triangle)
        assert statuses == [200, 200, 422], [r.text for r in triangle]
        loser = next(r for r in triangle if r.status_code == 422)
        assert problem_type(loser) == "alias-loop", loser.text

    with engine_for(fresh_database_url) as engine:
        assert_no_cycle(engine)
        # Each winner's row is there: one internal edge per pair, two per triangle.
        internal = sql(
            engine,
            "SELECT COUNT(*) FROM virtual_aliases WHERE destination LIKE :local",
            local=f"%@{d}",
        )
        assert internal == [(len(pairs) + 2 * len(triangles),)]


BURST = 100  # more than the 40 worker threads FastAPI runs sync routes in


def test_write_burst_larger_than_the_threadpool(
    fresh_database_url: str, settings: Settings
) -> None:
    with engine_for(fresh_database_url) as engine:
        migrate(engine)
    burst = settings.model_copy(
        update={"DATABASE_URL": fresh_database_url, "DATABASE_CONNECT_TIMEOUT": 2}
    )
    with api_client(burst) as client:
        assert client.post("/domains", json={"name": "burst.example"}).status_code == 201
        barrier = threading.Barrier(BURST, timeout=30)

        def create(i: int) -> int | str:
            barrier.wait()
            body = {"address": f"user{i}@burst.example", "password": "summersun"}
            try:
                return client.post("/mailboxes", json=body).status_code
            except Exception as exc:  # a 500: the TestClient re-raises the app's exception
                return type(exc).__name__

        with ThreadPoolExecutor(max_workers=BURST) as pool:
            outcomes = list(pool.map(create, range(BURST)))
    assert Counter(outcomes) == {201: BURST}
