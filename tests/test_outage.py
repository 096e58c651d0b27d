"""The database goes away and comes back, under a running app (MariaDB, PostgreSQL).

A small TCP relay in the test (``Proxy``, loopback only) stands between the app
and the real server, so the test can take the database away at the network:
refuse new connections and cut the open ones, hang without answering, or cut
one connection exactly at its COMMIT. What must hold:

- while the database is away every API request fails fast (well within the
  bound below) with 503 problem+json and ``Retry-After``; /health stays 200,
  /ready says 503;
- when it is back, the same app recovers by itself (no restart) and writes work;
- nothing is half-written: a change whose connection died before COMMIT left
  no row at all; a change whose COMMIT got through but whose answer was lost is
  complete (and a retry says it exists), never partial.
"""

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db import create_db_engine
from app.migrate import migrate
from tests.backends import BACKEND
from tests.helpers import api_client, sql
from tests.live import free_port

pytestmark = [
    pytest.mark.skipif(
        BACKEND == "sqlite", reason="SQLite is a file in the app's own process: no server to lose"
    ),
    pytest.mark.slow,  # waits out timeouts and outages
]

PROBLEM = "application/problem+json"
CONNECT_TIMEOUT = 2  # DATABASE_CONNECT_TIMEOUT for the app under test
# Fail fast means an answer in about the connect timeout, never a hang: generous on purpose.
FAIL_FAST = 10.0
MAX_CONNECTIONS = 64

# The COMMIT command as each driver sends it: PyMySQL a COM_QUERY packet (command
# byte 0x03), psycopg a simple-protocol Query message (NUL-terminated). Neither
# matches the "READ COMMITTED" of the isolation level the engine sets.
COMMIT = {"mariadb": b"\x03COMMIT", "postgresql": b"COMMIT\x00"}
INSERT_ALIAS = b"INSERT INTO virtual_aliases"


@dataclass
class _Link:
    client: socket.socket
    server: socket.socket | None = None
    mute: bool = False  # drop what the server answers
    wrote: bool = False  # sent the statement the armed cut waits for


@dataclass
class Proxy:
    """A bounded TCP relay 127.0.0.1:port -> upstream, in threads.

    ``start``/``stop`` open and close the listener on the same port; ``stop``
    also cuts every open connection. ``hang`` keeps accepting but never answers.
    ``cut_at_commit`` drops, at its COMMIT, the next connection that sent a given
    statement: before passing the COMMIT on (``deliver=False``) or after
    (``deliver=True``, the answer lost). Other transactions (authentication,
    audit) pass untouched.
    """

    upstream: tuple[str, int]
    port: int = field(default_factory=free_port)
    hanging: bool = False
    commit: bytes | None = None
    after: bytes = b""
    deliver: bool = False
    _listener: socket.socket | None = None
    _links: list[_Link] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.1)
        self._listener = listener
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        """Close the listener (connects are refused) and cut every connection."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._cut_all()
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=5)
            assert not thread.is_alive(), "proxy thread did not stop"

    def hang(self) -> None:
        """From now on accept connections but never answer; cut the open ones."""
        self.hanging = True
        self._cut_all()

    def relay(self) -> None:
        """Answer again (after ``hang``): cut the hung connections, relay new ones."""
        self.hanging = False
        self._cut_all()

    def cut_at_commit(self, marker: bytes, *, after: bytes, deliver: bool) -> None:
        self.deliver, self.after = deliver, after
        self.commit = marker

    # -- internals

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed
            client.settimeout(None)
            with self._lock:
                if len(self._links) >= MAX_CONNECTIONS:
                    client.close()
                    continue
                link = _Link(client)
                self._links.append(link)
            if self.hanging:
                continue  # accepted by the kernel and by us, never answered
            try:
                link.server = socket.create_connection(self.upstream, timeout=5)
                link.server.settimeout(None)
            except OSError:
                self._close(link)
                continue
            self._spawn(self._to_server, link)
            self._spawn(self._to_client, link)

    def _to_server(self, link: _Link) -> None:
        assert link.server is not None
        try:
            while data := link.client.recv(65536):
                marker = self.commit
                if marker is not None and self.after in data:
                    link.wrote = True
                if marker is not None and link.wrote and marker in data:
                    self.commit = None
                    link.mute = True
                    if self.deliver:
                        # COMMIT reaches the server, then end of input; its answer is dropped.
                        link.server.sendall(data)
                        link.server.shutdown(socket.SHUT_WR)
                        _close(link.client)
                        return  # _to_client drains the server's answer, then closes
                    break
                link.server.sendall(data)
        except OSError:
            pass
        self._close(link)

    def _to_client(self, link: _Link) -> None:
        assert link.server is not None
        try:
            while data := link.server.recv(65536):
                if not link.mute:
                    link.client.sendall(data)
        except OSError:
            pass
        self._close(link)

    def _close(self, link: _Link) -> None:
        _close(link.client)
        if link.server is not None:
            _close(link.server)
        with self._lock:
            if link in self._links:
                self._links.remove(link)

    def _cut_all(self) -> None:
        with self._lock:
            links = list(self._links)
        for link in links:
            self._close(link)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# ---------------------------------------------------------------- fixtures


@dataclass
class Outage:
    proxy: Proxy
    client: TestClient
    engine: Engine  # direct, not through the proxy: what is really in the database


@pytest.fixture
def outage(fresh_database_url: str) -> Iterator[Outage]:
    direct = create_db_engine(fresh_database_url)
    migrate(direct)
    url = make_url(fresh_database_url)
    proxy = Proxy(
        upstream=(url.host or "127.0.0.1", url.port or (3306 if BACKEND == "mariadb" else 5432))
    )
    proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = Settings(
        DATABASE_URL=proxied,
        DATABASE_CONNECT_TIMEOUT=CONNECT_TIMEOUT,
        DATABASE_READ_TIMEOUT=3,  # MariaDB: how long a silent server may keep a request
        BCRYPT_COST=4,
    )
    try:
        with api_client(settings) as client:
            yield Outage(proxy=proxy, client=client, engine=direct)
    finally:
        proxy.stop()
        direct.dispose()


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_unavailable(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["status"] == 503
    assert elapsed < FAIL_FAST, f"took {elapsed:.1f} s"


def wait_ready(client: TestClient, tries: int = 50) -> int:
    """Poll /ready until 200; how many polls it took."""
    for attempt in range(1, tries + 1):
        if client.get("/ready").status_code == 200:
            return attempt
        time.sleep(0.2)
    raise AssertionError(f"/ready not 200 after {tries} polls")


def count(engine: Engine, statement: str, **params: Any) -> int:
    return int(sql(engine, statement, **params)[0][0])


MAILBOX = {"address": "john@example.org", "password": "summersun"}
ALIAS = {
    "source": "team@example.org",
    "destinations": ["john@example.org", "a@ext.example", "b@ext.example"],
}


# ---------------------------------------------------------------- tests


def test_outage_fails_fast_and_recovers_without_restart(outage: Outage) -> None:
    client, proxy = outage.client, outage.proxy
    assert client.post("/domains", json={"name": "example.org"}).status_code == 201
    assert client.get("/ready").status_code == 200

    proxy.stop()  # the database is gone: connects refused, pooled connections cut
    requests: list[tuple[str, Callable[[], httpx.Response]]] = [
        ("create mailbox", lambda: client.post("/mailboxes", json=MAILBOX)),
        ("create alias", lambda: client.post("/aliases", json=ALIAS)),
        ("read domain", lambda: client.get("/domains/example.org")),
        ("list domains", lambda: client.get("/domains")),
        ("delete domain", lambda: client.delete("/domains/example.org")),
    ]
    for name, call in requests:
        response, elapsed = timed(call)
        assert_unavailable(response, elapsed)
        assert response.json()["type"].startswith("urn:mailprov:problem:"), name
    assert client.get("/health").status_code == 200
    response, elapsed = timed(lambda: client.get("/ready"))
    assert_unavailable(response, elapsed)
    # Nothing reached the database.
    assert count(outage.engine, "SELECT COUNT(*) FROM virtual_users") == 0
    assert count(outage.engine, "SELECT COUNT(*) FROM virtual_domains") == 1

    proxy.start()  # back, same port; the app is the same running app
    wait_ready(client)
    assert client.post("/mailboxes", json=MAILBOX).status_code == 201
    assert client.post("/aliases", json=ALIAS).status_code == 201
    assert client.get("/domains/example.org").json()["mailboxes"] == 1
    assert count(outage.engine, "SELECT COUNT(*) FROM virtual_users") == 1
    assert count(outage.engine, "SELECT COUNT(*) FROM virtual_aliases") == 3


def test_connection_lost_before_commit_leaves_nothing(outage: Outage) -> None:
    client, proxy = outage.client, outage.proxy
    assert client.post("/domains", json={"name": "example.org"}).status_code == 201
    assert client.post("/mailboxes", json=MAILBOX).status_code == 201

    # Three rows for one alias: the inserts reach the server, the COMMIT never does.
    proxy.cut_at_commit(COMMIT[BACKEND], after=INSERT_ALIAS, deliver=False)
    response, elapsed = timed(lambda: client.post("/aliases", json=ALIAS))
    assert proxy.commit is None, "the COMMIT was never seen: the test proves nothing"
    assert_unavailable(response, elapsed)
    source = ALIAS["source"]
    assert (
        count(outage.engine, "SELECT COUNT(*) FROM virtual_aliases WHERE source=:s", s=source) == 0
    )

    # The same change again, through the same app: whole, once.
    response = client.post("/aliases", json=ALIAS)
    assert response.status_code == 201, response.text
    assert (
        count(outage.engine, "SELECT COUNT(*) FROM virtual_aliases WHERE source=:s", s=source) == 3
    )


def test_answer_lost_after_commit_is_complete_and_retry_says_so(outage: Outage) -> None:
    """The one case a client cannot tell from outside: a 503 on a write means
    'outcome unknown'. It is never partial, and repeating the request answers
    409 (it exists) rather than writing it twice."""
    client, proxy = outage.client, outage.proxy
    assert client.post("/domains", json={"name": "example.org"}).status_code == 201
    assert client.post("/mailboxes", json=MAILBOX).status_code == 201

    proxy.cut_at_commit(COMMIT[BACKEND], after=INSERT_ALIAS, deliver=True)
    response, elapsed = timed(lambda: client.post("/aliases", json=ALIAS))
    assert proxy.commit is None, "the COMMIT was never seen: the test proves nothing"
    assert_unavailable(response, elapsed)
    source = ALIAS["source"]
    assert (
        count(outage.engine, "SELECT COUNT(*) FROM virtual_aliases WHERE source=:s", s=source) == 3
    )

    response = client.post("/aliases", json=ALIAS)
    assert response.status_code == 409, response.text
    assert response.json()["type"] == "urn:mailprov:problem:alias-exists"
    assert (
        count(outage.engine, "SELECT COUNT(*) FROM virtual_aliases WHERE source=:s", s=source) == 3
    )


def _hung_server_answers(outage: Outage) -> tuple[httpx.Response | None, float]:
    """A request while the server accepts connections but never answers."""
    client, proxy = outage.client, outage.proxy
    assert client.post("/domains", json={"name": "example.org"}).status_code == 201
    proxy.hang()
    result: list[httpx.Response] = []
    failure: list[Exception] = []

    def request() -> None:
        try:
            result.append(client.post("/mailboxes", json=MAILBOX))
        except Exception as exc:  # a 500: the TestClient re-raises the app's exception
            failure.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    worker.join(timeout=FAIL_FAST)
    elapsed = time.monotonic() - started
    proxy.relay()  # unblocks a request stuck on a hung connection
    worker.join(timeout=30)
    assert not failure, f"500: {failure[0]!r}"
    wait_ready(client)
    return (result[0] if result else None), elapsed


@pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL's variant; MariaDB's below")
def test_hung_server_fails_fast_postgresql(outage: Outage) -> None:
    response, elapsed = _hung_server_answers(outage)
    assert response is not None, f"no answer within {elapsed:.1f} s"
    assert_unavailable(response, elapsed)
    assert count(outage.engine, "SELECT COUNT(*) FROM virtual_users") == 0


@pytest.mark.skipif(BACKEND != "mariadb", reason="MariaDB's variant; PostgreSQL's above")
def test_hung_server_fails_fast_mariadb(outage: Outage) -> None:
    response, elapsed = _hung_server_answers(outage)
    assert response is not None, f"no answer within {elapsed:.1f} s"
    assert_unavailable(response, elapsed)


def test_saturated_pool_answers_503(fresh_database_url: str) -> None:
    """Every pooled connection is busy (here: waiting on a lock someone else holds):
    one more request waits pool_timeout (= DATABASE_CONNECT_TIMEOUT), then answers
    503 + Retry-After, like any other time the database cannot serve it."""
    direct = create_db_engine(fresh_database_url)
    migrate(direct)
    settings = Settings(
        DATABASE_URL=fresh_database_url,
        DATABASE_CONNECT_TIMEOUT=1,
        DATABASE_POOL_SIZE=1,  # one connection plus one overflow
        BCRYPT_COST=4,
    )
    holder = direct.connect()
    try:
        with api_client(settings) as client:
            assert client.post("/domains", json={"name": "example.org"}).status_code == 201
            for i in range(3):
                body = {"source": f"a{i}@example.org", "destinations": ["x@ext.example"]}
                assert client.post("/aliases", json=body).status_code == 201
            # Someone holds the alias-graph lock; alias edits queue behind it.
            holder.execute(
                text("SELECT name FROM mailprov_locks WHERE name='alias-graph' FOR UPDATE")
            )
            answers: dict[int, httpx.Response | Exception] = {}

            def edit(i: int) -> None:
                body = {"destination": f"y{i}@ext.example"}
                try:
                    answers[i] = client.post(f"/aliases/a{i}@example.org/destinations", json=body)
                except Exception as exc:  # a 500: the TestClient re-raises the app's exception
                    answers[i] = exc

            threads = [threading.Thread(target=edit, args=(i,), daemon=True) for i in range(3)]
            for thread in threads:
                thread.start()
                time.sleep(0.3)
            started = time.monotonic()
            while len(answers) < 1 and time.monotonic() - started < FAIL_FAST:
                time.sleep(0.05)
            first = dict(answers)
            holder.rollback()  # let the queued ones through
            for thread in threads:
                thread.join(timeout=30)
            assert len(first) == 1, f"nobody answered within {FAIL_FAST} s"
            (response,) = first.values()
            assert isinstance(response, httpx.Response), f"500: {response!r}"
            assert_unavailable(response, 0.0)
            statuses = [getattr(r, "status_code", r) for r in answers.values()]
            assert sorted(map(str, statuses)) == ["200", "200", "503"]
    finally:
        holder.close()
        direct.dispose()
