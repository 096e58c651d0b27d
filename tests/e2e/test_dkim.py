"""End to end (issue 19): DKIM keys made through the API, handed to rspamd by
`mailprov dkim sync`, sign what /send submits; the records `GET /dns` prints,
served by the stack's Knot DNS, verify those signatures (dkimpy) and pass the
API's own check.

Each test hosts a domain under the stack's test zone (example.org), publishes
what `/dns?format=zone` printed into the zone file and reloads Knot: the same
name server dkimpy and `GET /dns/check` ask.
"""

import email
import itertools
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from email import policy
from pathlib import Path
from typing import Any

import dkim as dkimpy
import dns.message
import dns.query
import dns.rdatatype
import httpx
import pytest

from app import dkim as mailprov_dkim
from tests.e2e.conftest import STACK_SH, MailStack, _mailprov_env, _output
from tests.live import MAILPROV, Live, live_server

pytestmark = pytest.mark.e2e

SECRET = "e2e-" + uuid.uuid4().hex + uuid.uuid4().hex  # a fresh key-encryption secret
_serials = itertools.count(int(time.time()) % 2**31)


class Zone:
    """The stack's test zone: each test's records, written whole and reloaded."""

    def __init__(self, stack: MailStack) -> None:
        self.stack = stack
        self.path = Path(stack.env["MAILPROV_STACK_DNS_ZONE_FILE"])
        self.origin = stack.env["MAILPROV_STACK_DNS_ZONE"]
        self.blocks: dict[str, list[str]] = {}

    def publish(self, domain: str, lines: list[str]) -> None:
        self.blocks[domain] = lines
        head = [
            f"$ORIGIN {self.origin}.",
            "$TTL 60",
            f"@ IN SOA ns.{self.origin}. hostmaster.{self.origin}. {next(_serials)} 60 60 600 5",
            f"@ IN NS ns.{self.origin}.",
            "ns IN A 127.0.0.1",
        ]
        body = [line for block in self.blocks.values() for line in block]
        temporary = self.path.with_suffix(".new")
        temporary.write_text("\n".join(head + body) + "\n")
        temporary.chmod(0o644)
        temporary.replace(self.path)
        result = self.stack.sh("dns-reload")
        assert result.returncode == 0, f"stack.sh dns-reload: {_output(result)}"

    def txt(self, name: str, timeout: float = 5) -> bytes | None:
        """dkimpy's DNS lookup, asked of the stack's name server."""
        query = dns.message.make_query(name.decode() if isinstance(name, bytes) else name, "TXT")
        answer = dns.query.udp(query, self.stack.env["MAILPROV_STACK_DNS_HOST"], timeout,
                               port=int(self.stack.env["MAILPROV_STACK_DNS_PORT"]))  # fmt: skip
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                return b"".join(rrset[0].strings)
        return None


@pytest.fixture(scope="module")
def zone(stack: MailStack) -> Zone:
    return Zone(stack)


@pytest.fixture(scope="module")
def dkim_live(stack: MailStack) -> Iterator[Live]:
    """mailprov with a key-encryption secret and the stack's name server as resolver."""
    env = _mailprov_env(stack, stack.env["MAILPROV_STACK_SUBMISSION_PORT"], "starttls") | {
        "MAILPROV_DKIM_KEY_SECRET": SECRET,
        "MAILPROV_DNS_MX_HOST": f"mail.{stack.env['MAILPROV_STACK_DNS_ZONE']}",
        "MAILPROV_DNS_RESOLVERS": (
            f"{stack.env['MAILPROV_STACK_DNS_HOST']}:{stack.env['MAILPROV_STACK_DNS_PORT']}"
        ),
        "MAILPROV_DNS_TIMEOUT": "2",
    }
    with live_server(stack.env["MAILPROV_STACK_DB_URL_RW"], **env) as server:
        yield server


@pytest.fixture(scope="module")
def dapi(dkim_live: Live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dkim_live.base, headers=dkim_live.headers, timeout=60) as client:
        yield client


@pytest.fixture
def dkim_domain(dapi: httpx.Client, zone: Zone) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}.{zone.origin}"
    assert dapi.post("/domains", json={"name": name}).status_code == 201
    for local, password in (("john", "summersun"), ("lisa", "wintermoon")):
        response = dapi.post(
            "/mailboxes", json={"address": f"{local}@{name}", "password": password}
        )
        assert response.status_code == 201, response.text
    yield name
    dapi.delete(f"/domains/{name}", params={"cascade": "true"})
    zone.blocks.pop(name, None)


def sync(stack: MailStack) -> str:
    """`mailprov dkim sync` into the stack's rspamd, reloading it when anything changed."""
    result = subprocess.run(
        [str(MAILPROV), "dkim", "sync",
         "--dir", stack.env["MAILPROV_STACK_DKIM_DIR"],
         "--selector-map", stack.env["MAILPROV_STACK_DKIM_SELECTOR_MAP"],
         "--reload-command", f"{STACK_SH} rspamd-reload"],
        env=stack.process_env | {
            "MAILPROV_DATABASE_URL": stack.env["MAILPROV_STACK_DB_URL_RW"],
            "MAILPROV_DKIM_KEY_SECRET": SECRET,
        },
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"mailprov dkim sync: {result.stdout}{result.stderr}"
    return result.stderr


def zone_lines(dapi: httpx.Client, domain: str) -> list[str]:
    response = dapi.get(f"/domains/{domain}/dns", params={"format": "zone"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/dns")
    return [line for line in response.text.splitlines() if line and not line.startswith(";")]


def send(dapi: httpx.Client, stack: MailStack, domain: str, subject: str) -> bytes:
    """John sends Lisa a message through /send; the copy in her Maildir."""
    response = dapi.post(
        "/send",
        json={
            "from": {"address": f"john@{domain}", "name": "John"},
            "to": [f"lisa@{domain}"],
            "subject": subject,
            "text": f"Signed, sealed, delivered.\n{subject}\n",
            "credentials": {"username": f"john@{domain}", "password": "summersun"},
        },
    )
    assert response.status_code == 200, response.text
    return stack.wait_for_message(f"lisa@{domain}", subject)


def signature(message: bytes, stack: MailStack) -> dict[str, str]:
    parsed = email.message_from_bytes(message, policy=policy.compat32)
    header = parsed["DKIM-Signature"]
    assert header, f"no DKIM-Signature; rspamd log:\n{rspamd_log_tail(stack)}"
    tags = {}
    for part in "".join(str(header).split()).split(";"):
        key, _, value = part.partition("=")
        if key:
            tags[key] = value
    return tags


def rspamd_log_tail(stack: MailStack, lines: int = 20) -> str:
    log = Path(stack.env["MAILPROV_STACK_RSPAMD_LOG"])
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def verifies(message: bytes, zone: Zone) -> bool:
    return bool(dkimpy.verify(message, dnsfunc=zone.txt))


def test_send_is_signed_with_the_key_dns_publishes(
    dapi: httpx.Client, stack: MailStack, zone: Zone, dkim_domain: str
) -> None:
    """A key made through the API signs /send's mail once synced; the TXT record
    /dns printed, served by Knot, verifies it; the key file is rspamd's alone."""
    created = dapi.post(f"/domains/{dkim_domain}/dkim", json={})
    assert created.status_code == 201, created.text
    key: dict[str, Any] = created.json()
    assert key["state"] == "active" and key["algorithm"] == "rsa" and key["bits"] == 2048
    assert "private" not in created.text.lower()
    assert "written" in sync(stack)
    key_file = Path(stack.env["MAILPROV_STACK_DKIM_DIR"]) / f"{dkim_domain}.{key['selector']}.key"
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert oct(key_file.stat().st_mode & 0o777) == "0o640"
    assert key_file.group() == "_rspamd"
    # Idempotent: a second run changes nothing (and so reloads nothing).
    assert "0 key file(s) written, 0 removed" in sync(stack)

    zone.publish(dkim_domain, zone_lines(dapi, dkim_domain))
    message = send(dapi, stack, dkim_domain, f"signed {uuid.uuid4().hex[:8]}")
    tags = signature(message, stack)
    assert (tags["d"], tags["s"], tags["a"]) == (dkim_domain, key["selector"], "rsa-sha256")
    assert verifies(message, zone)

    # The stored private key is sealed: the database alone does not disclose it.
    listed = subprocess.run(
        [str(MAILPROV), "dkim", "list"],
        env=os.environ | {"MAILPROV_DATABASE_URL": stack.env["MAILPROV_STACK_DB_URL_RW"]},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert f'"selector": "{key["selector"]}"' in listed.stdout
    assert '"stored": "aesgcm:' in listed.stdout


def test_rotation_signs_with_the_new_key_and_the_old_one_still_verifies(
    dapi: httpx.Client, stack: MailStack, zone: Zone, dkim_domain: str
) -> None:
    old = dapi.post(f"/domains/{dkim_domain}/dkim", json={}).json()["selector"]
    sync(stack)
    zone.publish(dkim_domain, zone_lines(dapi, dkim_domain))
    before = send(dapi, stack, dkim_domain, f"before rotation {uuid.uuid4().hex[:8]}")
    assert signature(before, stack)["s"] == old

    rotated = dapi.post(f"/domains/{dkim_domain}/dkim", json={"activate": True})
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()["selector"]
    states = {
        k["selector"]: k["state"] for k in dapi.get(f"/domains/{dkim_domain}/dkim").json()["items"]
    }
    assert states == {old: "retired", new: "active"}
    lines = zone_lines(dapi, dkim_domain)
    assert any(line.startswith(f"{old}._domainkey.") for line in lines)  # still published
    zone.publish(dkim_domain, lines)
    sync(stack)

    after = send(dapi, stack, dkim_domain, f"after rotation {uuid.uuid4().hex[:8]}")
    assert signature(after, stack)["s"] == new
    assert verifies(after, zone)
    assert verifies(before, zone), "mail signed before the rotation no longer verifies"

    # Once the old key is deleted and its record leaves the zone, it no longer does.
    assert dapi.delete(f"/domains/{dkim_domain}/dkim/{old}").status_code == 200
    assert "0 key file(s) written, 1 removed" in sync(stack)  # and no rspamd reload
    zone.publish(dkim_domain, zone_lines(dapi, dkim_domain))
    assert not verifies(before, zone)
    assert verifies(after, zone)


def check(dapi: httpx.Client, domain: str) -> dict[str, Any]:
    response = dapi.get(f"/domains/{domain}/dns/check")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_check_reports_ok_missing_and_wrong_from_the_name_server(
    dapi: httpx.Client, zone: Zone, dkim_domain: str
) -> None:
    selector = dapi.post(f"/domains/{dkim_domain}/dkim", json={"algorithm": "ed25519"}).json()[
        "selector"
    ]
    lines = zone_lines(dapi, dkim_domain)

    zone.publish(dkim_domain, lines)
    result = check(dapi, dkim_domain)
    assert result["status"] == "ok", result
    assert {r["result"] for r in result["records"]} == {"ok"}
    assert {r["purpose"] for r in result["records"]} >= {"mx", "spf", "dmarc", "dkim"}

    zone.publish(dkim_domain, [line for line in lines if "._domainkey." not in line])
    result = check(dapi, dkim_domain)
    assert result["status"] == "problems"
    dkim_row = next(r for r in result["records"] if r["purpose"] == "dkim")
    assert (dkim_row["result"], dkim_row["found"]) == ("missing", [])
    assert all(r["result"] == "ok" for r in result["records"] if r["purpose"] != "dkim")

    stranger = mailprov_dkim.generate("ed25519", 256).public_key
    wrong = mailprov_dkim.txt_value("ed25519", stranger)
    zone.publish(
        dkim_domain,
        [line for line in lines if "._domainkey." not in line]
        + [f'{selector}._domainkey.{dkim_domain}. 60 IN TXT "{wrong}"'],
    )
    result = check(dapi, dkim_domain)
    dkim_row = next(r for r in result["records"] if r["purpose"] == "dkim")
    assert (result["status"], dkim_row["result"], dkim_row["found"]) == (
        "problems",
        "different",
        [wrong],
    )
