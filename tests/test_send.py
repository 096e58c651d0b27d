"""POST /send against a real SMTP submission server (aiosmtpd, STARTTLS + AUTH)."""

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from app.config import Settings
from tests.helpers import bearer, make_key, sql
from tests.live import free_port
from tests.sending import message, send_app
from tests.smtpd import PASSWORD, QUEUE_ID, USERNAME, SubmissionServer, submission_server

pytestmark = pytest.mark.usefixtures("empty_after")


@pytest.fixture
def smtp(ca: trustme.CA, ca_file: str) -> Iterator[SubmissionServer]:
    with submission_server(ca, ca_file, slow_data=3) as server:
        yield server


@pytest.fixture
def sender(settings: Settings, smtp: SubmissionServer, engine: Engine) -> Iterator[TestClient]:
    """A key that may send as @example.org, against the test server."""
    app = send_app(settings, smtp)
    key = make_key(engine, name="mailer", send_as=["@example.org"])
    with TestClient(app, headers=bearer(key)) as client:
        yield client
    app.state.engine.dispose()


def test_send_queues_and_parses_queue_id(sender: TestClient, smtp: SubmissionServer) -> None:
    response = sender.post("/send", json=message())
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "queued"
    assert result["queue_id"] == QUEUE_ID
    assert result["smtp_response"] == f"250 2.0.0 Ok: queued as {QUEUE_ID}"
    assert result["accepted"] == ["lisa@ext.net"] and result["refused"] == []
    assert result["message_id"].endswith("@example.org>")
    assert smtp.transcript.verbs() == ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "DATA"]


def test_send_message_as_received(sender: TestClient, smtp: SubmissionServer) -> None:
    pdf = b"%PDF-1.4 fake \x00\xff binary"
    logo = b"\x89PNG\r\n\x1a\n fake"
    response = sender.post(
        "/send",
        json=message(
            to=[{"address": "lisa@ext.net", "name": "Lisa Müller"}, "Joe@Bücher.de"],
            cc=["cc@ext.net"],
            bcc=["hidden@ext.net", "LISA@ext.net"],
            reply_to=["support@example.org"],
            subject="Grüße",
            text="Hallo Wörld",
            html='<p>Hallo <img src="cid:logo@example.org"></p>',
            attachments=[
                {
                    "filename": "report.pdf",
                    "content_type": "application/pdf",
                    "content": base64.b64encode(pdf).decode(),
                },
                {
                    "filename": "logo.png",
                    "content_type": "image/png",
                    "content": base64.b64encode(logo).decode(),
                    "content_id": "logo@example.org",
                },
            ],
            headers={"X-Campaign": "autumn"},
        ),
    )
    assert response.status_code == 200, response.text
    [received] = smtp.transcript.received
    # Envelope: everyone once (case-insensitively), Bcc included, IDN as A-label.
    assert received.mail_from == "john@example.org"
    assert received.rcpt_tos == [
        "lisa@ext.net",
        "Joe@xn--bcher-kva.de",
        "cc@ext.net",
        "hidden@ext.net",
    ]
    parsed = received.message
    assert parsed["From"] == "John Doe <john@example.org>"
    assert parsed["To"] == "Lisa Müller <lisa@ext.net>, Joe@xn--bcher-kva.de"
    assert parsed["Cc"] == "cc@ext.net"
    assert parsed["Bcc"] is None and b"hidden@ext.net" not in received.data
    assert parsed["Reply-To"] == "support@example.org"
    assert parsed["Subject"] == "Grüße"
    assert parsed["Message-ID"] == response.json()["message_id"]
    assert parsed["Date"] is not None and parsed["X-Campaign"] == "autumn"
    assert parsed.get_body(("plain",)).get_content().strip() == "Hallo Wörld"
    html = parsed.get_body(("html",))
    assert "cid:logo@example.org" in html.get_content()
    parts = {part.get_filename(): part for part in parsed.walk() if part.get_filename()}
    assert parts["report.pdf"].get_content() == pdf
    assert parts["report.pdf"].get_content_disposition() == "attachment"
    assert parts["logo.png"].get_content() == logo
    assert parts["logo.png"]["Content-ID"] == "<logo@example.org>"
    assert parts["logo.png"].get_content_disposition() == "inline"
    assert received.data.isascii()  # 7-bit safe: quoted-printable and base64 bodies


def test_send_wrong_password_is_401_one_attempt(sender: TestClient, smtp: SubmissionServer) -> None:
    response = sender.post(
        "/send", json=message(credentials={"username": USERNAME, "password": "wrong"})
    )
    assert response.status_code == 401
    assert response.json()["type"] == "urn:mailprov:problem:submission-login-failed"
    assert "the credentials in the request" in response.json()["detail"]
    assert "wrong" not in response.text
    assert smtp.transcript.verbs().count("AUTH") == 1 and "MAIL" not in smtp.transcript.verbs()


def test_send_service_account_wrong_is_502(
    settings: Settings, smtp: SubmissionServer, engine: Engine
) -> None:
    app = send_app(
        settings, smtp, SUBMISSION_USERNAME=USERNAME, SUBMISSION_PASSWORD=SecretStr("not-it")
    )
    with TestClient(app, headers=bearer(make_key(engine, admin=True))) as client:
        response = client.post("/send", json=message(credentials=None))
        assert response.status_code == 502
        assert "the service's account" in response.json()["detail"]
    app = send_app(
        settings, smtp, SUBMISSION_USERNAME=USERNAME, SUBMISSION_PASSWORD=SecretStr(PASSWORD)
    )
    with TestClient(app, headers=bearer(make_key(engine, admin=True))) as client:
        assert client.post("/send", json=message(credentials=None)).status_code == 200


def test_send_without_any_credentials_is_422(sender: TestClient, smtp: SubmissionServer) -> None:
    response = sender.post("/send", json=message(credentials=None))
    assert response.status_code == 422
    assert response.json()["type"] == "urn:mailprov:problem:credentials-required"
    assert smtp.transcript.commands == []


def test_send_no_starttls_never_sends_credentials(
    settings: Settings, ca: trustme.CA, ca_file: str, engine: Engine
) -> None:
    with submission_server(ca, ca_file, tls="none") as plain:
        app = send_app(settings, plain)
        with TestClient(app, headers=bearer(make_key(engine, admin=True))) as client:
            response = client.post("/send", json=message())
        assert response.status_code == 502
        assert response.json()["type"] == "urn:mailprov:problem:submission-tls-failed"
        assert "AUTH" not in plain.transcript.verbs()
        assert plain.transcript.verbs() == ["EHLO"]


def test_send_untrusted_certificate_is_502(
    settings: Settings, smtp: SubmissionServer, engine: Engine, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    app = send_app(settings, smtp, SUBMISSION_CA_FILE=str(other_ca))
    with TestClient(app, headers=bearer(make_key(engine, admin=True))) as client:
        response = client.post("/send", json=message())
    assert response.status_code == 502
    assert response.json()["type"] == "urn:mailprov:problem:submission-tls-failed"
    assert "AUTH" not in smtp.transcript.verbs()


def test_send_implicit_tls_465(
    settings: Settings, ca: trustme.CA, ca_file: str, engine: Engine
) -> None:
    with submission_server(ca, ca_file, tls="implicit") as implicit:
        app = send_app(settings, implicit)
        with TestClient(app, headers=bearer(make_key(engine, admin=True))) as client:
            response = client.post("/send", json=message())
        assert response.status_code == 200, response.text
        assert "STARTTLS" not in implicit.transcript.verbs()
        assert implicit.transcript.verbs()[:2] == ["EHLO", "AUTH"]


def test_send_server_down_is_502(settings: Settings, engine: Engine, ca_file: str) -> None:
    down = SubmissionServer("127.0.0.1", free_port(), ca_file, None, "starttls")  # type: ignore[arg-type]
    app = send_app(settings, down)
    with TestClient(app, headers=bearer(make_key(engine, admin=True))) as client:
        response = client.post("/send", json=message())
    assert response.status_code == 502
    assert response.json()["type"] == "urn:mailprov:problem:submission-unreachable"


@pytest.mark.slow  # waits out the submission timeout
def test_send_slow_server_after_data_is_504_unknown(
    sender: TestClient, smtp: SubmissionServer
) -> None:
    response = sender.post("/send", json=message(to=["slow@ext.net"]))
    assert response.status_code == 504
    assert response.json()["type"] == "urn:mailprov:problem:submission-timeout"
    assert "outcome is unknown" in response.json()["detail"]


def test_send_partial_recipient_refusal(sender: TestClient) -> None:
    response = sender.post("/send", json=message(to=["lisa@ext.net", "nobody@ext.net"]))
    assert response.status_code == 200
    assert response.json()["accepted"] == ["lisa@ext.net"]
    assert response.json()["refused"] == [
        {
            "address": "nobody@ext.net",
            "code": 550,
            "message": "5.1.1 <nobody@ext.net>: Recipient address rejected: User unknown",
        }
    ]


def test_send_all_recipients_refused_is_422(sender: TestClient, smtp: SubmissionServer) -> None:
    response = sender.post("/send", json=message(to=["nobody@ext.net", "nobody2@ext.net"]))
    assert response.status_code == 422
    assert response.json()["type"] == "urn:mailprov:problem:recipients-refused"
    assert "DATA" not in smtp.transcript.verbs()


def test_send_temporary_failure_is_503_retry_after(sender: TestClient, engine: Engine) -> None:
    sql(engine, "UPDATE mailprov_api_keys SET send_as = :s", s='["@example.org"]')
    response = sender.post("/send", json=message(**{"from": "busy@example.org"}))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "60"
    deferred = sender.post("/send", json=message(to=["later@ext.net"]))
    assert deferred.status_code == 503


@pytest.mark.parametrize("local", ["notmine", "latenotmine"])
def test_send_sender_refused_by_server_is_403(
    sender: TestClient, smtp: SubmissionServer, local: str
) -> None:
    # At MAIL, or (Postfix's default, smtpd_delay_reject=yes) on every RCPT.
    response = sender.post("/send", json=message(**{"from": f"{local}@example.org"}))
    assert response.status_code == 403
    assert response.json()["type"] == "urn:mailprov:problem:sender-refused"
    assert "not owned by user" in response.json()["detail"]
    assert "DATA" not in smtp.transcript.verbs()


def test_send_from_outside_key_permission_refused_before_smtp(
    sender: TestClient, smtp: SubmissionServer
) -> None:
    response = sender.post("/send", json=message(**{"from": "ceo@other.org"}))
    assert response.status_code == 403
    assert response.json()["type"] == "urn:mailprov:problem:send-not-allowed"
    assert smtp.transcript.commands == []


def test_send_oversize_is_413_before_connecting(
    settings: Settings, smtp: SubmissionServer, engine: Engine
) -> None:
    app = send_app(settings, smtp, SEND_MAX_BYTES=2048)
    with TestClient(app, headers=bearer(make_key(engine, admin=True))) as client:
        response = client.post("/send", json=message(text="x" * 4000))
    assert response.status_code == 413
    assert smtp.transcript.commands == []


def test_send_too_many_recipients_refused(sender: TestClient, smtp: SubmissionServer) -> None:
    response = sender.post("/send", json=message(to=[f"r{i}@ext.net" for i in range(51)]))
    assert response.status_code == 422
    assert smtp.transcript.commands == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"headers": {"Bcc": "x@y.org"}}, "headers"),
        ({"headers": {"X-Evil": "a\r\nBcc: victim@x.org"}}, "headers"),
        ({"headers": {"X-Evil\r\nBcc": "x"}}, "headers"),
        ({"headers": {"X-Null": "a\x00b"}}, "headers"),
        ({"subject": "Hi\r\nBcc: victim@x.org"}, "subject"),
        ({"from": {"address": "john@example.org", "name": "J\nBcc: v@x.org"}}, "from.name"),
        ({"to": ["a@x.org\r\nRCPT TO:<v@x.org>"]}, "to.0.address"),
        ({"attachments": [{"filename": "a\r\n.txt", "content": "aGk="}]}, "attachments.0.filename"),
        (
            {"attachments": [{"filename": "a.txt", "content": "not base64!"}]},
            "attachments.0.content",
        ),
        ({"text": None, "html": None}, "body"),
        ({"to": [], "cc": [], "bcc": []}, "body"),
    ],
)
def test_send_injection_and_bad_input_refused(
    sender: TestClient, smtp: SubmissionServer, extra: dict[str, object], field: str
) -> None:
    response = sender.post("/send", json=message(**extra))
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
    assert smtp.transcript.commands == []


def test_send_utf8_local_part_needs_smtputf8(
    settings: Settings, ca: trustme.CA, ca_file: str, engine: Engine
) -> None:
    with submission_server(ca, ca_file, smtputf8=False) as old:
        app = send_app(settings, old)
        with TestClient(app, headers=bearer(make_key(engine, admin=True))) as client:
            response = client.post("/send", json=message(to=["用户@例子.广告"]))
        assert response.status_code == 422
        assert response.json()["type"] == "urn:mailprov:problem:smtputf8-unsupported"
        assert "AUTH" not in old.transcript.verbs()
    with submission_server(ca, ca_file) as modern:
        app = send_app(settings, modern)
        with TestClient(app, headers=bearer(make_key(engine, admin=True))) as client:
            response = client.post("/send", json=message(to=["用户@例子.广告"]))
        assert response.status_code == 200, response.text
        [received] = modern.transcript.received
        assert "SMTPUTF8" in [o.upper() for o in received.mail_options]
        assert received.rcpt_tos == ["用户@xn--fsqu00a.xn--4rr70v"]


def test_send_idempotent_replay(sender: TestClient, smtp: SubmissionServer, engine: Engine) -> None:
    headers = {"Idempotency-Key": "order-4711"}
    first = sender.post("/send", json=message(), headers=headers)
    again = sender.post("/send", json=message(), headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(smtp.transcript.received) == 1
    conflict = sender.post("/send", json=message(subject="Other"), headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["type"] == "urn:mailprov:problem:idempotency-key-reused"
    # The stored answer never holds the password.
    assert PASSWORD not in str(sql(engine, "SELECT * FROM mailprov_idempotency"))


def test_send_idempotent_in_flight_conflicts(sender: TestClient, engine: Engine) -> None:
    from app.clock import utcnow
    from app.idempotency import IN_FLIGHT, request_hash

    key_id = sender.headers["authorization"].split("_")[1]
    sql(
        engine,
        "INSERT INTO mailprov_idempotency (key_id, idem_key, request_hash, state, created_at) "
        "VALUES (:k, 'running', :h, :s, :t)",
        k=key_id,
        h=request_hash({}),
        s=IN_FLIGHT,
        t=utcnow(),
    )
    response = sender.post("/send", json=message(), headers={"Idempotency-Key": "running"})
    assert response.status_code == 409
    assert response.json()["type"] in {
        "urn:mailprov:problem:idempotency-in-flight",
        "urn:mailprov:problem:idempotency-key-reused",
    }


def test_send_retryable_failure_frees_idempotency_key(
    sender: TestClient, smtp: SubmissionServer
) -> None:
    headers = {"Idempotency-Key": "retry-me"}
    busy = message(to=["later@ext.net"])
    assert sender.post("/send", json=busy, headers=headers).status_code == 503
    assert sender.post("/send", json=busy, headers=headers).status_code == 503
    assert smtp.transcript.verbs().count("MAIL") == 2  # tried again, not replayed


def test_send_audited_without_body_or_credentials(sender: TestClient, engine: Engine) -> None:
    sender.post("/send", json=message(text="very private text"))
    rows = sql(engine, "SELECT action, target, outcome, status FROM mailprov_audit")
    assert rows == [("send_message", "john@example.org", "success", 200)]
    everything = str(sql(engine, "SELECT * FROM mailprov_audit"))
    assert "very private text" not in everything and PASSWORD not in everything
