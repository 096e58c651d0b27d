"""The shell examples in README.md and docs/runbook.md work as written: every
block, in order, in one shell, against a live `mailprov serve` that relays to a
real (test) submission server."""

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.live import MAILPROV, ROOT, live_server
from tests.smtpd import SubmissionServer, submission_server

WRITTEN_BASE = "http://127.0.0.1:8000"
DOCS = {"README.md": ROOT / "README.md", "runbook": ROOT / "docs" / "runbook.md"}
# The logins each document's examples send with, as the test server knows them.
ACCOUNTS = {
    "README.md": {"john@example.org": "summersun", "relay@example.org": "relaypass"},
    "runbook": {"john@example.org": "autumnleaf"},
}


def example_blocks(path: Path) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    return [block for block in blocks if "curl " in block or "mailprov keys" in block]


def test_readme_shows_every_everyday_task() -> None:
    text = "\n".join(example_blocks(DOCS["README.md"]))
    for example in [
        "mailprov keys create --admin",
        f"-X POST {WRITTEN_BASE}/domains",
        f"-X POST {WRITTEN_BASE}/mailboxes",
        f"-X POST {WRITTEN_BASE}/aliases",
        f"-X POST {WRITTEN_BASE}/keys",
        '"domains": ["example.org"]',
        f"'{WRITTEN_BASE}/mailboxes?",
        f"-X PATCH {WRITTEN_BASE}/mailboxes/",
        f"-X POST {WRITTEN_BASE}/send",
        '"credentials": {"username": "john@example.org"',
        f"'{WRITTEN_BASE}/domains/example.org?cascade=true'",
    ]:
        assert example in text, example


def test_runbook_covers_every_everyday_task() -> None:
    text = "\n".join(example_blocks(DOCS["runbook"]))
    for task in [
        "mailprov keys create --admin",  # first admin key
        '-X POST "$MAILPROV/domains"',  # domain
        '-X POST "$MAILPROV/mailboxes"',  # mailbox
        '{"password": "autumnleaf"}',  # password reset
        '{"quota": 5368709120}',  # quota
        '"source": "info@example.org"',  # forwarding
        '"source": "@example.org"',  # catch-all
        '"domains": ["example.org"]',  # domain-scoped key
        '-X POST "$MAILPROV/send"',  # send
        '"$MAILPROV/domains/example.org/dkim"',  # DKIM key
        "dns?format=zone",  # records to publish
        "dns/check",  # are they published
        '{"state": "active"}',  # rotation
        "domains/example.org?cascade=true",  # delete with cascade
    ]:
        assert task in text, task


@pytest.fixture
def ca_file(tmp_path: Path) -> Iterator[tuple[trustme.CA, str]]:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    yield ca, str(path)


@pytest.mark.slow  # a live server and curl
@pytest.mark.parametrize("doc", list(DOCS))
def test_doc_examples_run_in_order(
    fresh_database_url: str, ca_file: tuple[trustme.CA, str], doc: str
) -> None:
    ca, ca_path = ca_file
    with submission_server(ca, ca_path, accounts=ACCOUNTS[doc]) as smtp:
        submission = {
            "MAILPROV_SUBMISSION_HOST": smtp.host,
            "MAILPROV_SUBMISSION_PORT": str(smtp.port),
            "MAILPROV_SUBMISSION_CA_FILE": smtp.ca_file,
            "MAILPROV_SUBMISSION_USERNAME": "relay@example.org",
            "MAILPROV_SUBMISSION_PASSWORD": "relaypass",
            # No name server here: the check's lookups fail (reported, never a 5xx), briefly.
            "MAILPROV_DNS_TIMEOUT": "1",
        }
        with live_server(fresh_database_url, **submission) as live:
            run_examples(DOCS[doc], live.base, fresh_database_url)
            check_outcome(doc, smtp, live.base, live.headers)


def run_examples(path: Path, base: str, database_url: str) -> None:
    script = "\n".join(example_blocks(path)).replace(WRITTEN_BASE, base)
    # As written: `.venv/bin/mailprov` from the checkout, on the server's database.
    script = script.replace(".venv/bin/mailprov", str(MAILPROV))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=os.environ | {"MAILPROV_DATABASE_URL": database_url},
    )
    assert result.returncode == 0, f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def check_outcome(doc: str, smtp: SubmissionServer, base: str, headers: dict[str, str]) -> None:
    if doc == "README.md":
        # Both sends went through, Bcc in the envelope only.
        assert [r.rcpt_tos for r in smtp.transcript.received] == [
            ["lisa@example.net"],
            ["lisa@example.net", "archive@example.net"],
        ]
        # The domain-scoped key made lisa@; the audit trail names that key.
        audit = httpx.get(
            base + "/audit", params={"target": "lisa@example.org"}, headers=headers
        ).json()
        assert [(e["action"], e["key_name"]) for e in audit["items"]] == [
            ("create_mailbox", "example.org helpdesk")
        ]
    else:
        # The send went out with the reset password; the revoked customer key is dead.
        assert [r.rcpt_tos for r in smtp.transcript.received] == [["lisa@example.net"]]
        keys = httpx.get(base + "/keys", headers=headers).json()["items"]
        assert sorted(k["name"] for k in keys if k["revoked_at"]) == ["example.org helpdesk"]
    # Both end by deleting the domain with everything in it.
    assert httpx.get(base + "/domains", headers=headers).json()["total"] == 0
