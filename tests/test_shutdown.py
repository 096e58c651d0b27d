"""SIGTERM to a real `mailprov serve` (uvicorn, one worker and two) while a slow
request is in flight: what `docker stop`, systemd or Kubernetes send on every deploy.

What must hold:

- the request in flight completes with its normal answer, and what it did is
  done whole: the message reached the submission server, the row and its audit
  entry are both in the database (never one without the other);
- the server stops taking new work: with one worker the port refuses new
  connections at once; with several, after the workers are gone;
- once drained the process exits by itself with status 0.

Each test proves it signalled *during* the request, not after: the signal goes
out only once the request is visibly under way (the SMTP server has the DATA
command; bcrypt is burning CPU), and shutdown is seen to have begun (the port
refuses, or a worker has exited) while the answer is still outstanding.
"""

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import trustme

from app.db import create_db_engine
from tests.helpers import sql
from tests.live import Live, live_server
from tests.smtpd import PASSWORD, USERNAME, SubmissionServer, submission_server

SLOW_DATA = 2  # seconds the SMTP server sits on DATA before it answers
BOUND = 30  # generous: only there so a broken shutdown fails instead of hanging
WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])

pytestmark = [
    pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads Linux /proc"),
    pytest.mark.slow,  # live servers, stopped with SIGTERM mid-request
]


@pytest.fixture
def smtp(ca: trustme.CA, ca_file: str) -> Iterator[SubmissionServer]:
    with submission_server(ca, ca_file, slow_data=SLOW_DATA) as server:
        yield server


def wait_for(condition: Callable[[], bool], what: str, live: Live) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {BOUND} s for {what}; server log:\n{live.output()}")
        time.sleep(0.02)


def refuses(live: Live) -> bool:
    """True once nothing listens on the server's port any more."""
    host, port = live.base.removeprefix("http://").rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:  # accepted into the backlog, then timed out or reset: still listening
        return False


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, ..."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text.rsplit(")", 1)[1].split()


def workers_of(live: Live) -> list[int]:
    """The uvicorn worker processes under `mailprov serve` (none when it serves itself)."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if _stat(pid)[1:2] == [str(live.process.pid)]]


def gone(pid: int) -> bool:
    return _stat(pid)[:1] in ([], ["Z"], ["X"])


def cpu_seconds(live: Live) -> float:
    """CPU time used so far by the server and its workers."""
    ticks = 0
    for pid in [live.process.pid, *workers_of(live)]:
        fields = _stat(pid)
        if fields:
            ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def terminate_mid_request(live: Live, request: "Future[httpx.Response]") -> httpx.Response:
    """SIGTERM now; see shutdown begin while `request` is still open; its answer."""
    workers = workers_of(live)
    live.process.send_signal(signal.SIGTERM)
    if workers:
        # The supervisor passes SIGTERM to every worker at once; the idle one exits at
        # once, while the busy one drains. (The supervisor keeps the listening socket
        # until it exits itself, so new connections queue rather than being refused.)
        wait_for(lambda: any(gone(pid) for pid in workers), "a worker to exit", live)
    else:
        wait_for(lambda: refuses(live), "the port to refuse new connections", live)
    assert not request.done(), "the request ended before shutdown began: nothing was tested"
    return request.result(timeout=BOUND)


def assert_exits_cleanly(live: Live) -> None:
    try:
        status = live.process.wait(timeout=BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mailprov serve still running {BOUND} s after SIGTERM:\n{live.output()}")
    assert status == 0, live.output()
    assert refuses(live)


@WORKERS
def test_sigterm_lets_send_in_flight_finish(
    workers: int, fresh_database_url: str, smtp: SubmissionServer
) -> None:
    env = {
        "MAILPROV_SUBMISSION_HOST": smtp.host,
        "MAILPROV_SUBMISSION_PORT": str(smtp.port),
        "MAILPROV_SUBMISSION_CA_FILE": smtp.ca_file,
        "MAILPROV_SUBMISSION_TIMEOUT": str(BOUND),
    }
    message = {
        "from": USERNAME,
        "to": ["slow@ext.example"],  # the test server holds DATA for SLOW_DATA seconds
        "subject": "Deploy in progress",
        "text": "Sent while the service was being stopped.",
        "credentials": {"username": USERNAME, "password": PASSWORD},
    }
    with live_server(fresh_database_url, workers=workers, **env) as live:
        with ThreadPoolExecutor(1) as pool, httpx.Client(timeout=BOUND) as client:
            sending = pool.submit(
                client.post, live.base + "/send", json=message, headers=live.headers
            )
            wait_for(lambda: "DATA" in smtp.transcript.verbs(), "the relay to reach DATA", live)
            response = terminate_mid_request(live, sending)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "queued"
        assert_exits_cleanly(live)

    [received] = smtp.transcript.received
    assert received.rcpt_tos == ["slow@ext.example"]
    assert received.message["Message-ID"] == response.json()["message_id"]
    engine = create_db_engine(fresh_database_url)
    try:
        audit = sql(
            engine, "SELECT action, status FROM mailprov_audit WHERE action = 'send_message'"
        )
    finally:
        engine.dispose()
    assert audit == [("send_message", 200)]


@WORKERS
def test_sigterm_lets_mailbox_create_in_flight_commit_whole(
    workers: int, fresh_database_url: str
) -> None:
    # bcrypt at cost 15 takes seconds: the request is in the app, hashing, when signalled.
    with live_server(fresh_database_url, workers=workers, MAILPROV_BCRYPT_COST="15") as live:
        with ThreadPoolExecutor(1) as pool, httpx.Client(timeout=BOUND) as client:
            domain = client.post(live.base + "/domains", json={"name": "example.org"},
                                 headers=live.headers)  # fmt: skip
            assert domain.status_code == 201, domain.text
            idle = cpu_seconds(live)
            creating = pool.submit(
                client.post,
                live.base + "/mailboxes",
                json={"address": "john@example.org", "password": "summersun"},
                headers=live.headers,
            )
            wait_for(lambda: cpu_seconds(live) > idle + 0.2, "bcrypt to be under way", live)
            response = terminate_mid_request(live, creating)
        assert response.status_code == 201, response.text
        assert_exits_cleanly(live)

    engine = create_db_engine(fresh_database_url)
    try:
        rows = sql(engine, "SELECT email, password FROM virtual_users")
        audit = sql(
            engine, "SELECT target, status FROM mailprov_audit WHERE action = 'create_mailbox'"
        )
    finally:
        engine.dispose()
    assert [(email, stored[:17]) for email, stored in rows] == [
        ("john@example.org", "{BLF-CRYPT}$2y$15")
    ]
    assert audit == [("john@example.org", 201)]
