"""A real SMTP submission server for tests: aiosmtpd with STARTTLS required and AUTH
only after TLS, certificates from a CA made at test time (trustme), and a
transcript of every command the client sent.

Behaviour by address, so one server covers most cases:
- sender busy@...       -> MAIL answered 451 4.3.0 (temporary)
- sender notmine@...    -> MAIL answered 553 5.7.1 (reject_sender_login_mismatch)
- sender latenotmine@...-> every RCPT answered 553 5.7.1 Sender address rejected,
                           as Postfix does with smtpd_delay_reject=yes
- recipient nobody...@  -> RCPT answered 550 5.1.1
- recipient later...@   -> RCPT answered 450 4.2.0
- recipient slow...@    -> DATA answered only after `slow_data` seconds
"""

import asyncio
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.live import free_port

USERNAME, PASSWORD = "john@example.org", "summersun"
QUEUE_ID = "4XQz1R2bTmz9vKp"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Transcript:
    commands: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def verbs(self) -> list[str]:
        with self.lock:
            return [c.split(" ", 1)[0].upper() for c in self.commands]


class Handler:
    def __init__(self, transcript: Transcript, slow_data: float) -> None:
        self.transcript = transcript
        self.slow_data = slow_data

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("busy@"):
            return "451 4.3.0 Please try again later"
        if address.startswith("notmine@"):
            return f"553 5.7.1 <{address}>: Sender address rejected: not owned by user {USERNAME}"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if str(envelope.mail_from).startswith("latenotmine@"):
            return (
                f"553 5.7.1 <{envelope.mail_from}>: Sender address rejected: "
                f"not owned by user {USERNAME}"
            )
        if address.startswith("nobody"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.startswith("later"):
            return "450 4.2.0 Recipient address rejected: greylisted"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if any(r.startswith("slow") for r in envelope.rcpt_tos):
            await asyncio.sleep(self.slow_data)
        with self.transcript.lock:
            self.transcript.received.append(
                Received(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=bytes(envelope.original_content or b""),
                    mail_options=list(envelope.mail_options),
                )
            )
        return f"250 2.0.0 Ok: queued as {QUEUE_ID}"


def _authenticator(accounts: dict[str, str]) -> Any:
    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and accounts.get(auth_data.login.decode()) == auth_data.password.decode()
        )
        return AuthResult(success=ok, handled=False)

    return check


class RecordingSMTP(SMTP):
    """Writes down every command line before handling it."""

    transcript: Transcript

    async def push(self, status: str) -> None:
        await super().push(status)

    def _record(self, line: str) -> None:
        with self.transcript.lock:
            self.transcript.commands.append(line)

    async def smtp_EHLO(self, arg: str) -> None:
        self._record(f"EHLO {arg}")
        await super().smtp_EHLO(arg)

    async def smtp_STARTTLS(self, arg: str) -> None:
        self._record("STARTTLS")
        await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        self._record(f"AUTH {arg.split(' ')[0]}")  # the mechanism, never the secret
        await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str) -> None:
        self._record(f"MAIL {arg}")
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        self._record(f"RCPT {arg}")
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        self._record("DATA")
        await super().smtp_DATA(arg)


class RecordingController(Controller):
    def __init__(self, transcript: Transcript, **kwargs: Any) -> None:
        self.transcript = transcript
        super().__init__(**kwargs)

    def factory(self) -> SMTP:
        server = RecordingSMTP(self.handler, **self.SMTP_kwargs)
        server.transcript = self.transcript
        return server


@dataclass
class SubmissionServer:
    host: str
    port: int
    ca_file: str
    transcript: Transcript
    tls: str  # "starttls", "implicit" or "none"


@contextmanager
def submission_server(
    ca: trustme.CA,
    ca_file: str,
    *,
    tls: str = "starttls",
    slow_data: float = 0,
    smtputf8: bool = True,
    accounts: dict[str, str] | None = None,
) -> Iterator[SubmissionServer]:
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    transcript = Transcript()
    port = free_port()
    kwargs: dict[str, Any] = {
        "handler": Handler(transcript, slow_data),
        "hostname": "127.0.0.1",
        "port": port,
        "authenticator": _authenticator(accounts or {USERNAME: PASSWORD}),
        "auth_required": False,
        "enable_SMTPUTF8": smtputf8,
        "server_hostname": "mx.test",
        "ready_timeout": 10,
    }
    if tls == "starttls":
        kwargs.update(tls_context=context, require_starttls=True, auth_require_tls=True)
    elif tls == "implicit":
        kwargs.update(ssl_context=context, auth_require_tls=False)
    else:  # a server that offers AUTH in clear text and no STARTTLS at all
        kwargs.update(auth_require_tls=False)
    controller = RecordingController(transcript, **kwargs)
    controller.start()
    try:
        yield SubmissionServer("127.0.0.1", port, ca_file, transcript, tls)
    finally:
        controller.stop()


def serve(ca_file: str) -> None:
    """Run a submission server until SIGTERM: its CA goes to ca_file, and
    "<host> <port>" to stdout. For benchmarks and fuzzing in another process."""
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    ca = trustme.CA()
    ca.cert_pem.write_to_path(ca_file)
    with submission_server(ca, ca_file) as smtp:
        print(smtp.host, smtp.port, flush=True)
        signal.sigwait({signal.SIGTERM})


if __name__ == "__main__":
    import sys

    serve(sys.argv[1])
