"""A Python client generated from the committed OpenAPI document by
openapi-python-client (pinned in pyproject) runs a whole provisioning story
against a live server: the spec is not just valid, it is usable."""

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import trustme

from tests.live import ROOT, live_server
from tests.smtpd import PASSWORD, USERNAME, submission_server

pytestmark = pytest.mark.slow  # generates a client in a subprocess; a live server

SPEC = ROOT / "openapi" / "openapi.json"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Generate the client package `mailprov_client` into a fresh directory."""
    out = tmp_path_factory.mktemp("client")
    result = subprocess.run(
        [str(BIN / "openapi-python-client"), "generate", "--path", str(SPEC), "--meta", "none",
         "--output-path", str(out / "mailprov_client")],
        capture_output=True, text=True, timeout=120,
        # Its post-hooks format with ruff: the project's pinned one.
        env=os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout, result.stdout
    sys.path.insert(0, str(out))
    try:
        yield "mailprov_client"
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.startswith("mailprov_client")]:
            del sys.modules[name]


def module(package: str, name: str) -> ModuleType:
    return importlib.import_module(f"{package}.{name}")


def test_generated_client_provisioning_story(
    generated: str, fresh_database_url: str, tmp_path: Path
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client_mod = module(generated, "client")
    models = module(generated, "models")
    api = lambda name: module(generated, f"api.{name}")  # noqa: E731
    with submission_server(ca, str(ca_file)) as smtp:
        env = {
            "MAILPROV_SUBMISSION_HOST": smtp.host,
            "MAILPROV_SUBMISSION_PORT": str(smtp.port),
            "MAILPROV_SUBMISSION_CA_FILE": str(ca_file),
        }
        with live_server(fresh_database_url, **env) as live:
            token = live.headers["Authorization"].split()[1]
            with client_mod.AuthenticatedClient(base_url=live.base, token=token) as client:
                domain = api("domains.create_domain").sync_detailed(
                    client=client, body=models.DomainCreate(name="Example.ORG")
                )
                assert domain.status_code == 201 and domain.parsed.name == "example.org"

                mailbox = api("mailboxes.create_mailbox").sync(
                    client=client,
                    body=models.MailboxCreate(
                        address="john@example.org", password=PASSWORD, quota=1024
                    ),
                )
                assert mailbox.address == "john@example.org" and mailbox.quota == 1024

                alias = api("aliases.create_alias").sync(
                    client=client,
                    body=models.AliasCreate(
                        source="info@example.org", destinations=["john@example.org"]
                    ),
                )
                assert alias.destinations == ["john@example.org"]

                changed = api("mailboxes.update_mailbox").sync(
                    address="john@example.org", client=client,
                    body=models.MailboxUpdate(password="wintermoon"),
                )  # fmt: skip
                assert changed.address == "john@example.org"

                sent = api("send.send_message").sync(
                    client=client,
                    body=models.SendRequest(
                        from_=models.Mailbox(address="john@example.org", name="John"),
                        to=[models.Mailbox(address="lisa@example.net")],
                        subject="Hi",
                        text="From the generated client",
                        credentials=models.Credentials(username=USERNAME, password=PASSWORD),
                    ),
                )
                assert sent.status == "queued" and sent.queue_id
                assert smtp.transcript.received[0].rcpt_tos == ["lisa@example.net"]

                # Errors arrive as the documented problem document.
                missing = api("mailboxes.read_mailbox").sync_detailed(
                    address="nobody@example.org", client=client
                )
                assert missing.status_code == 404
                assert missing.parsed.type_ == "urn:mailprov:problem:mailbox-not-found"

                page = api("mailboxes.list_mailboxes").sync(client=client, domain="example.org")
                assert page.total == 1 and page.items[0].address == "john@example.org"

                deleted = api("domains.delete_domain").sync(
                    name="example.org", client=client, cascade=True
                )
                assert deleted.mailboxes_removed == 1 and deleted.aliases_removed == 1
