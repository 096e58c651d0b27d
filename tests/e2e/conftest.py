"""Fixtures of the end-to-end suite (issue 6): the reference mail stack of
`deploy/stack.sh` (Postfix + Dovecot on loopback, reading MariaDB) and a live
mailprov in front of it.

Once per session: `stack.sh install` and `start` with a fresh state dir and a
fresh database, `mailprov migrate` as the read-write database user, `stack.sh
grant`, then `mailprov serve` on a free loopback port. At the end mailprov and
the stack stop and the database is dropped. The state dir (configuration, logs,
maildirs) is removed after a clean run and kept after a failing one; the summary
names it.

The state dir is not under pytest's tmp dir: pytest keeps /tmp/pytest-of-<user>
at mode 0700 (and resets it so at every session start, from any concurrent
pytest run too), and Postfix, Dovecot and the vmail user reach their files as
unprivileged users. `stack.sh start` refuses such a directory.

Without the stack (not root, packages not installable, ports taken, no MariaDB)
the tests are skipped with the reason; with CI=true they fail instead.
"""

import imaplib
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from tests.helpers import output_tail as _output
from tests.helpers import parse_exports as _parse_env
from tests.helpers import run_script as _run
from tests.live import MAILPROV, ROOT, Live, live_server

STACK_SH = ROOT / "deploy" / "stack.sh"
STRANGER = "stranger@example.net"  # an outside sender, as another mail server would send
POLL_SECONDS = 0.1
DELIVERY_TIMEOUT = 30.0  # seconds for a queued message to reach a Maildir or the log
ISPMAIL_TABLES = ("virtual_domains", "virtual_users", "virtual_aliases")

_notes: list[str] = []  # printed in the terminal summary


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test against the real Postfix + Dovecot of deploy/stack.sh "
        "(needs root and MariaDB; run with scripts/e2e.sh)",
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for note in _notes:
        terminalreporter.write_line(f"e2e: {note}")


def unavailable(reason: str) -> NoReturn:
    """No stack here: skip, or fail under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"e2e: the mail stack is required (CI=true): {reason}", pytrace=False)
    pytest.skip(f"e2e: no mail stack here: {reason}")


def _stack_environment(state_dir: Path, database: str) -> dict[str, str]:
    """What stack.sh runs with: the caller's MAILPROV_STACK_* settings do not leak in,
    except the machine's MariaDB port and the timeout."""
    keep = {"MAILPROV_STACK_DB_PORT", "MAILPROV_STACK_TIMEOUT"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPROV_STACK_") or k in keep}
    return env | {
        "MAILPROV_STACK_DIR": str(state_dir),
        "MAILPROV_STACK_DB": database,
        # What the tests rely on: mail for other domains is discarded after queueing
        # (logged), no auth cache, failed logins answered at once.
        "MAILPROV_STACK_RELAYHOST": "discard",
        "MAILPROV_STACK_AUTH_CACHE_TTL": "0",
        "MAILPROV_STACK_AUTH_FAILURE_DELAY": "0",
    }


def _drop_database(database: str) -> None:
    """Drop the session's database and the grants stack.sh gave on it."""
    port = os.environ.get("MAILPROV_STACK_DB_PORT", "3306")
    engine = create_engine(
        f"mysql+pymysql://root@127.0.0.1:{port}/",
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    try:
        with engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{database}`"))
            for host in ("127.0.0.1", "localhost"):
                statements = [
                    f"REVOKE ALL PRIVILEGES ON `{database}`.* FROM '{user}'@'{host}'"
                    for user in ("mailprov", "mailserver")
                ] + [
                    f"REVOKE SELECT ON `{database}`.`{table}` FROM 'mailserver'@'{host}'"
                    for table in ISPMAIL_TABLES
                ]
                for statement in statements:
                    with suppress(SQLAlchemyError):  # no such grant
                        conn.execute(text(statement))
    finally:
        engine.dispose()


@dataclass
class MailStack:
    """A running stack: its `stack.sh env` settings and helpers to look at it."""

    env: dict[str, str]  # MAILPROV_STACK_*, as `stack.sh env` printed them
    process_env: dict[str, str]  # the environment stack.sh runs with

    # ---- commands
    def sh(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _run([str(STACK_SH), *args], self.process_env, timeout)

    def doveadm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.sh("doveadm", *args)

    def auth_test(self, user: str, password: str) -> subprocess.CompletedProcess[str]:
        """`doveadm auth test`: exit 0 when the login works."""
        return self.doveadm("auth", "test", user, password)

    def postmap(self, key: str, table: str) -> str | None:
        """`postmap -q KEY` on one of the stack's MySQL maps (`table`: e.g.
        "virtual-alias-maps" for mysql-virtual-alias-maps.cf); None when not found."""
        config = self.env["MAILPROV_STACK_POSTFIX_CONFIG"]
        result = _run(
            ["postmap", "-c", config, "-q", key, f"mysql:{config}/mysql-{table}.cf"],
            self.process_env,
            30,
        )
        if result.returncode == 1 and not result.stderr.strip():
            return None
        assert result.returncode == 0, f"postmap -q {key} ({table}) failed: {_output(result)}"
        return result.stdout.strip()

    # ---- files
    @property
    def maildir_root(self) -> Path:
        return Path(self.env["MAILPROV_STACK_MAILDIR_ROOT"])

    def maildir(self, address: str) -> Path:
        """The guide's layout: <root>/<domain>/<local part>/Maildir."""
        local, _, domain = address.rpartition("@")
        return self.maildir_root / domain / local / "Maildir"

    def messages(self, address: str, marker: str) -> list[bytes]:
        """The messages in the address's Maildir (new/, and cur/ once an IMAP
        session has seen them) that contain `marker`."""
        found = []
        for sub in ("new", "cur"):
            folder = self.maildir(address) / sub
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                try:
                    data = path.read_bytes()
                except FileNotFoundError:  # moved from new/ to cur/ meanwhile
                    continue
                if marker.encode() in data:
                    found.append(data)
        return found

    def wait_for_message(
        self, address: str, marker: str, timeout: float = DELIVERY_TIMEOUT
    ) -> bytes:
        deadline = time.monotonic() + timeout
        while not (found := self.messages(address, marker)):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no message with {marker!r} in {self.maildir(address)} after {timeout:.0f} s;"
                    f" postfix log:\n{self.log_tail()}"
                )
            time.sleep(POLL_SECONDS)
        return found[0]

    # ---- the Postfix log
    @property
    def postfix_log(self) -> Path:
        return Path(self.env["MAILPROV_STACK_POSTFIX_LOG"])

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.postfix_log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def wait_for_log(self, pattern: str, timeout: float = DELIVERY_TIMEOUT) -> str:
        """The first line of the Postfix log matching the regular expression."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                content = self.postfix_log.read_text(errors="replace")
            except FileNotFoundError:
                content = ""
            for line in content.splitlines():
                if regex.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no line matching {pattern!r} in {self.postfix_log} after {timeout:.0f} s;"
                    f" its end:\n{self.log_tail()}"
                )
            time.sleep(POLL_SECONDS)

    # ---- network clients (loopback only)
    @property
    def host(self) -> str:
        return self.env["MAILPROV_STACK_SMTP_HOST"]

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the server against the stack's private CA (and its name)."""
        return ssl.create_default_context(cafile=self.env["MAILPROV_STACK_CA_FILE"])

    def smtp(self) -> smtplib.SMTP:
        """A connection to port 25, as a mail server from outside would make it."""
        return smtplib.SMTP(
            self.host,
            int(self.env["MAILPROV_STACK_SMTP_PORT"]),
            local_hostname="mx.example.net",
            timeout=30,
        )

    def rcpt(self, recipient: str, sender: str = STRANGER) -> tuple[int, str]:
        """Postfix's answer to RCPT TO on port 25 (nothing is sent)."""
        with self.smtp() as smtp:
            code, reply = smtp.ehlo()
            assert code == 250, reply
            code, reply = smtp.mail(sender)
            assert code == 250, reply
            code, reply = smtp.rcpt(recipient)
            smtp.rset()
        return code, reply.decode(errors="replace")

    def deliver(self, recipient: str, subject: str, body: str, sender: str = STRANGER) -> str:
        """Send a message to port 25 as a stranger; its Message-ID."""
        message = EmailMessage()
        message["From"] = sender
        message["To"] = recipient
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain="example.net")
        message.set_content(body)
        with self.smtp() as smtp:
            refused = smtp.send_message(message, from_addr=sender, to_addrs=[recipient])
        assert not refused, refused
        return str(message["Message-ID"])

    @contextmanager
    def imap(self, user: str, password: str) -> Iterator[imaplib.IMAP4_SSL]:
        """A logged-in IMAP session over 993, the certificate verified."""
        client = imaplib.IMAP4_SSL(
            self.host,
            int(self.env["MAILPROV_STACK_IMAPS_PORT"]),
            ssl_context=self.ssl_context(),
            timeout=30,
        )
        try:
            client.login(user, password)
            yield client
        finally:
            with suppress(imaplib.IMAP4.error, OSError):
                client.logout()

    def imap_login_works(self, user: str, password: str) -> bool:
        try:
            with self.imap(user, password):
                return True
        except imaplib.IMAP4.error:
            return False

    def imap_fetch(self, user: str, password: str, subject: str) -> bytes:
        """The message with this Subject in the user's INBOX, fetched over IMAP."""
        with self.imap(user, password) as client:
            status, _ = client.select("INBOX", readonly=True)
            assert status == "OK"
            status, data = client.search(None, "HEADER", "Subject", f'"{subject}"')
            assert status == "OK" and data[0], f"no message with Subject {subject!r} over IMAP"
            number = data[0].split()[0]
            status, parts = client.fetch(number, "(RFC822)")
            assert status == "OK"
            for part in parts:
                if isinstance(part, tuple):
                    return part[1]
        raise AssertionError("IMAP FETCH returned no message")


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[MailStack]:
    if os.geteuid() != 0:
        unavailable("deploy/stack.sh runs as root")
    state_dir = Path(tempfile.mkdtemp(prefix="mailprov-e2e-"))
    state_dir.chmod(0o755)
    database = f"mailprov_e2e_{uuid.uuid4().hex[:12]}"
    env = _stack_environment(state_dir, database)
    start_tried = stopped = False
    try:
        result = _run([str(STACK_SH), "install"], env, timeout=900)
        if result.returncode != 0:
            unavailable(f"`deploy/stack.sh install` failed:\n{_output(result)}")
        start_tried = True
        try:
            result = _run([str(STACK_SH), "start"], env, timeout=300)
        except subprocess.TimeoutExpired:
            unavailable("`deploy/stack.sh start` did not finish within 300 s")
        if result.returncode != 0:
            unavailable(f"`deploy/stack.sh start` failed:\n{_output(result)}")
        result = _run([str(STACK_SH), "env"], env, timeout=30)
        assert result.returncode == 0, f"stack.sh env: {_output(result)}"
        running = MailStack(env=_parse_env(result.stdout), process_env=env)
        assert running.env["MAILPROV_STACK_DB"] == database, running.env

        # The ISPmail tables, made by mailprov's migrations as the read-write user;
        # then the read-only user of Postfix and Dovecot narrowed to them.
        result = _run(
            [str(MAILPROV), "migrate"],
            os.environ | {"MAILPROV_DATABASE_URL": running.env["MAILPROV_STACK_DB_URL_RW"]},
            timeout=120,
        )
        assert result.returncode == 0, f"mailprov migrate failed:\n{_output(result)}"
        result = running.sh("grant")
        assert result.returncode == 0, f"stack.sh grant failed:\n{_output(result)}"

        # What the tests' timing relies on: no auth cache, no delay after a failed login.
        result = _run(
            [
                "doveconf",
                "-c",
                running.env["MAILPROV_STACK_DOVECOT_CONFIG"],
                "-h",
                "auth_cache_size",
                "auth_failure_delay",
            ],
            env,
            timeout=30,
        )
        assert result.returncode == 0, _output(result)
        settings = result.stdout.split()
        assert settings == ["0", "0"], f"auth_cache_size, auth_failure_delay: {settings}"
        yield running
    finally:
        problems = []
        if start_tried:
            try:
                result = _run([str(STACK_SH), "stop"], env, timeout=180)
                stopped = result.returncode == 0
                if not stopped:
                    problems.append(f"`deploy/stack.sh stop` failed:\n{_output(result)}")
            except subprocess.TimeoutExpired:
                problems.append("`deploy/stack.sh stop` did not finish within 180 s")
        try:
            _drop_database(database)
        except SQLAlchemyError as error:
            _notes.append(f"could not drop the database {database}: {error}")
        if request.session.testsfailed or problems or (start_tried and not stopped):
            _notes.append(f"mail stack state dir kept (logs in log/): {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


def _mailprov_env(stack: MailStack, port: str, tls: str) -> dict[str, str]:
    return {
        "MAILPROV_MAILDIR_ROOT": str(stack.maildir_root),
        "MAILPROV_SUBMISSION_HOST": stack.host,
        "MAILPROV_SUBMISSION_PORT": port,
        "MAILPROV_SUBMISSION_TLS": tls,
        "MAILPROV_SUBMISSION_CA_FILE": stack.env["MAILPROV_STACK_CA_FILE"],
    }


@pytest.fixture(scope="session")
def live(stack: MailStack) -> Iterator[Live]:
    """mailprov serving the stack's database; /send submits on 587 with STARTTLS."""
    env = _mailprov_env(stack, stack.env["MAILPROV_STACK_SUBMISSION_PORT"], "starttls")
    with live_server(stack.env["MAILPROV_STACK_DB_URL_RW"], **env) as server:
        yield server


@pytest.fixture(scope="session")
def live_implicit(stack: MailStack) -> Iterator[Live]:
    """A second mailprov whose /send submits on 465 with TLS from the first byte."""
    env = _mailprov_env(stack, stack.env["MAILPROV_STACK_SUBMISSIONS_PORT"], "implicit")
    with live_server(stack.env["MAILPROV_STACK_DB_URL_RW"], **env) as server:
        yield server


@pytest.fixture(scope="session")
def api(live: Live) -> Iterator[httpx.Client]:
    """An HTTP client of the live mailprov, sending its admin key on every request."""
    with httpx.Client(base_url=live.base, headers=live.headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def api_implicit(live_implicit: Live) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=live_implicit.base, headers=live_implicit.headers, timeout=60
    ) as client:
        yield client


@pytest.fixture
def domain(api: httpx.Client) -> Iterator[str]:
    """A domain of its own for one test, hosted through the API and removed after it."""
    name = f"e2e-{uuid.uuid4().hex[:8]}.example.org"
    response = api.post("/domains", json={"name": name})
    assert response.status_code == 201, response.text
    yield name
    response = api.delete(f"/domains/{name}", params={"cascade": "true"})
    assert response.status_code in (200, 404), response.text
