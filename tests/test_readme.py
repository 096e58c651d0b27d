"""The README's shell examples work as written, against a live `mailprov serve`."""

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from tests.live import MAILPROV, ROOT, live_server
from tests.smtpd import PASSWORD, USERNAME, SubmissionServer, submission_server

README = ROOT / "README.md"
WRITTEN_BASE = "http://127.0.0.1:8000"


def example_blocks() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    return [block for block in blocks if "curl " in block or "mailprov keys" in block]


def test_readme_shows_every_everyday_task() -> None:
    text = "\n".join(example_blocks())
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


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SubmissionServer]:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with submission_server(ca, str(ca_file)) as server:
        yield server


def test_readme_examples_run_in_order(fresh_database_url: str, smtp: SubmissionServer) -> None:
    # The README's server relays to a real (test) submission server; its account and
    # John's login are the ones this server knows.
    submission = {
        "MAILPROV_SUBMISSION_HOST": smtp.host,
        "MAILPROV_SUBMISSION_PORT": str(smtp.port),
        "MAILPROV_SUBMISSION_CA_FILE": smtp.ca_file,
        "MAILPROV_SUBMISSION_USERNAME": USERNAME,
        "MAILPROV_SUBMISSION_PASSWORD": PASSWORD,
    }
    with live_server(fresh_database_url, **submission) as live:
        script = "\n".join(example_blocks()).replace(WRITTEN_BASE, live.base)
        # As written: `.venv/bin/mailprov` from the checkout, on the server's database.
        script = script.replace(".venv/bin/mailprov", str(MAILPROV))
        environment = os.environ | {"MAILPROV_DATABASE_URL": fresh_database_url}
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env=environment,
        )
        assert result.returncode == 0, f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        # Both sends went through, Bcc in the envelope only.
        assert [r.rcpt_tos for r in smtp.transcript.received] == [
            ["lisa@example.net"],
            ["lisa@example.net", "archive@example.net"],
        ]
        # The domain-scoped key made lisa@; the audit trail names that key.
        audit = httpx.get(
            live.base + "/audit", params={"target": "lisa@example.org"}, headers=live.headers
        ).json()
        assert [(e["action"], e["key_name"]) for e in audit["items"]] == [
            ("create_mailbox", "example.org helpdesk")
        ]
        # The last block removed everything again.
        assert httpx.get(live.base + "/domains", headers=live.headers).json()["total"] == 0
