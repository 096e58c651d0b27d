"""End to end (issue 6): what mailprov writes through its HTTP API is what the
real Postfix and Dovecot of deploy/stack.sh do.

Every change goes through the API of a live mailprov; only the checks look at
the mail server itself: `doveadm`, SMTP on port 25 as an outside server would
speak it, IMAP over TLS, the Maildirs, the Postfix log and `postmap -q`. Each
test hosts a domain of its own.
"""

import email
import re
import time
import uuid
from email import policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import MailStack

pytestmark = pytest.mark.e2e

PROBLEM = "urn:mailprov:problem:"
OUTSIDE = "friend@example.net"  # not hosted: Postfix queues it and discards it (logged)


def created(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(path, json=body)
    assert response.status_code == 201, f"POST {path}: {response.status_code} {response.text}"
    result: dict[str, Any] = response.json()
    return result


def mailbox(api: httpx.Client, address: str, password: str, quota: int = 0) -> dict[str, Any]:
    return created(api, "/mailboxes", {"address": address, "password": password, "quota": quota})


def alias(api: httpx.Client, source: str, *destinations: str) -> dict[str, Any]:
    return created(api, "/aliases", {"source": source, "destinations": list(destinations)})


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    kind: str = response.json()["type"]
    return kind


def marker() -> str:
    return f"e2e-{uuid.uuid4().hex[:12]}"


def storage_limit(stack: MailStack, address: str) -> str:
    """The STORAGE limit `doveadm quota get -u` reports (KiB, or "-" for none)."""
    result = stack.doveadm("-f", "tab", "quota", "get", "-u", address)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    header, *values = rows
    assert header[:4] == ["Quota name", "Type", "Value", "Limit"], header
    storage = [row for row in values if row[1] == "STORAGE"]
    assert len(storage) == 1, rows
    return storage[0][3]


# ---------------------------------------------------------------- case 1


def test_provisioned_mailbox_logs_in_to_dovecot(
    api: httpx.Client, stack: MailStack, domain: str
) -> None:
    """1. Domain, mailbox, alias and catch-all made through the API; Dovecot
    accepts the mailbox's password and nothing else."""
    john = f"john@{domain}"
    mailbox(api, john, "summersun")
    assert alias(api, f"info@{domain}", john)["destinations"] == [john]
    assert alias(api, f"@{domain}", john)["catch_all"] is True
    assert api.get(f"/domains/{domain}").json()["mailboxes"] == 1
    assert api.get(f"/domains/{domain}").json()["aliases"] == 2

    ok = stack.auth_test(john, "summersun")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "auth succeeded" in ok.stdout

    started = time.monotonic()
    wrong = stack.auth_test(john, "wintermoon")
    assert wrong.returncode != 0 and "auth failed" in wrong.stdout, wrong.stdout + wrong.stderr
    # auth_failure_delay 0 and no per-IP penalty: a failure is answered at once
    # (Dovecot flushes failures every 0.5 s), and so is the next login.
    assert time.monotonic() - started < 1.9
    started = time.monotonic()
    assert stack.auth_test(john, "summersun").returncode == 0
    assert time.monotonic() - started < 1.9

    # Neither an alias nor an address only the catch-all takes is a login.
    assert stack.auth_test(f"info@{domain}", "summersun").returncode != 0
    assert stack.auth_test(f"nobody@{domain}", "summersun").returncode != 0


# ---------------------------------------------------------------- case 2


@pytest.fixture(params=["starttls-587", "implicit-465"])
def sender_api(request: pytest.FixtureRequest) -> tuple[httpx.Client, str]:
    """The live mailprov for one submission mode, and the Postfix service name
    that mode reaches."""
    if request.param == "starttls-587":
        return request.getfixturevalue("api"), "postfix/submission/smtpd"
    return request.getfixturevalue("api_implicit"), "postfix/submissions/smtpd"


def test_send_delivers_to_alias_and_outside(
    api: httpx.Client,
    sender_api: tuple[httpx.Client, str],
    stack: MailStack,
    domain: str,
) -> None:
    """2. POST /send from a mailbox, to an alias and to an outside address,
    through 587 (STARTTLS) and 465 (implicit TLS): queued, logged under the
    queue id it answers, delivered to the alias's mailbox and readable over IMAP."""
    client, service = sender_api
    john, jane, team = f"john@{domain}", f"jane@{domain}", f"team@{domain}"
    mailbox(api, john, "summersun")
    mailbox(api, jane, "autumnleaf")
    alias(api, team, jane)
    subject = f"Status report {marker()}"
    text = f"Hello team,\nall is well.\n{marker()}\n"

    response = client.post(
        "/send",
        json={
            "from": {"address": john, "name": "John"},
            "to": [team, {"address": OUTSIDE, "name": "A Friend"}],
            "subject": subject,
            "text": text,
            "credentials": {"username": john, "password": "summersun"},
        },
    )
    assert response.status_code == 200, f"POST /send: {response.status_code} {response.text}"
    result = response.json()
    assert result["status"] == "queued"
    queue_id = result["queue_id"]
    assert re.fullmatch(r"[0-9A-F]{6,}", queue_id or ""), result
    # The server's final reply (with or without its 250) names the same queue id.
    assert re.fullmatch(rf"(250 )?2\.0\.0 Ok: queued as {queue_id}", result["smtp_response"]), (
        result
    )
    assert sorted(result["accepted"]) == sorted([team, OUTSIDE])
    assert result["refused"] == []
    message_id = result["message_id"]
    assert re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", message_id), result

    # The queue id is what an operator greps in the log: the submission service
    # took it from John's login, and it went to Jane (through the alias) and out.
    esc = re.escape
    stack.wait_for_log(
        rf"{esc(service)}\[\d+\]: {queue_id}: client=.*sasl_method=\w+, sasl_username={esc(john)}"
    )
    stack.wait_for_log(rf": {queue_id}: message-id={esc(message_id)}")
    stack.wait_for_log(rf": {queue_id}: to=<{esc(jane)}>, orig_to=<{esc(team)}>, .*status=sent")
    stack.wait_for_log(rf": {queue_id}: to=<{esc(OUTSIDE)}>, .*status=sent \(outbound mail sink")

    stored = email.message_from_bytes(stack.wait_for_message(jane, subject), policy=policy.default)
    assert stored["Message-ID"] == message_id
    assert not stack.messages(john, subject), "John got a copy he was not sent"

    fetched = stack.imap_fetch(jane, "autumnleaf", subject)
    message = email.message_from_bytes(fetched, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Message-ID"] == message_id
    assert message["Subject"] == subject
    assert message["From"].addresses[0].addr_spec == john
    assert message["From"].addresses[0].display_name == "John"
    assert {a.addr_spec for a in message["To"].addresses} == {team, OUTSIDE}
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == text


# ---------------------------------------------------------------- case 3


def test_catch_all_takes_unknown_local_parts_only(
    api: httpx.Client, stack: MailStack, domain: str
) -> None:
    """3. A catch-all receives mail for addresses that do not exist, but never
    the mail of an existing mailbox (the email2email map)."""
    john, jane, nobody = f"john@{domain}", f"jane@{domain}", f"nobody@{domain}"
    mailbox(api, john, "summersun")
    mailbox(api, jane, "autumnleaf")
    code, reply = stack.rcpt(nobody)
    assert (code, reply[:5]) == (550, "5.1.1"), reply  # no catch-all yet

    alias(api, f"@{domain}", john)
    for_nobody, for_jane = marker(), marker()
    stack.deliver(nobody, f"to nobody {for_nobody}", "caught by the catch-all")
    stack.deliver(jane, f"to jane {for_jane}", "for Jane's own mailbox")

    stack.wait_for_message(john, for_nobody)
    stack.wait_for_message(jane, for_jane)
    assert not stack.messages(john, for_jane), "the catch-all swallowed Jane's mail"
    assert not stack.messages(jane, for_nobody)
    # Nothing was made for the unknown address itself.
    assert not stack.maildir(nobody).exists()


# ---------------------------------------------------------------- case 4


def test_quota_from_the_api_is_dovecots(api: httpx.Client, stack: MailStack, domain: str) -> None:
    """4. The quota set through the API is what `doveadm quota get` reports."""
    john = f"john@{domain}"
    mailbox(api, john, "summersun", quota=5 * 1024 * 1024)
    assert storage_limit(stack, john) == "5120"  # KiB

    response = api.patch(f"/mailboxes/{john}", json={"quota": 10 * 1024 * 1024})
    assert response.status_code == 200, response.text
    assert response.json()["quota"] == 10 * 1024 * 1024
    assert storage_limit(stack, john) == "10240"

    response = api.patch(f"/mailboxes/{john}", json={"quota": 0})
    assert response.status_code == 200, response.text
    assert storage_limit(stack, john) == "-"  # 0 = unlimited


# ---------------------------------------------------------------- case 5


def test_password_change_takes_effect_at_next_login(
    api: httpx.Client, stack: MailStack, domain: str
) -> None:
    """5. After PATCH password, the next login (IMAP over TLS, doveadm) takes the
    new password and refuses the old one (the stack has no auth cache)."""
    john = f"john@{domain}"
    mailbox(api, john, "summersun")
    assert stack.imap_login_works(john, "summersun")

    response = api.patch(f"/mailboxes/{john}", json={"password": "wintermoon"})
    assert response.status_code == 200, response.text

    assert stack.imap_login_works(john, "wintermoon")
    assert not stack.imap_login_works(john, "summersun")
    assert stack.auth_test(john, "wintermoon").returncode == 0
    assert stack.auth_test(john, "summersun").returncode != 0


# ---------------------------------------------------------------- case 6


def test_send_with_a_from_the_login_does_not_own_is_refused(
    api: httpx.Client, stack: MailStack, domain: str
) -> None:
    """6. Postfix's sender login maps apply to /send: John may not send as Jane."""
    john, jane = f"john@{domain}", f"jane@{domain}"
    mailbox(api, john, "summersun")
    mailbox(api, jane, "autumnleaf")
    subject = f"Not from Jane {marker()}"

    response = api.post(
        "/send",
        json={
            "from": {"address": jane, "name": "Jane"},
            "to": [john],
            "subject": subject,
            "text": "forged",
            "credentials": {"username": john, "password": "summersun"},
        },
    )
    assert response.status_code == 403, f"POST /send: {response.status_code} {response.text}"
    assert problem_type(response) == PROBLEM + "sender-refused"
    assert "summersun" not in response.text
    # Refused by Postfix itself (reject_sender_login_mismatch), so never queued.
    stack.wait_for_log(
        rf"NOQUEUE: reject: RCPT from .*: 553 5\.7\.1 <{re.escape(jane)}>: "
        rf"Sender address rejected: not owned by user {re.escape(john)}"
    )
    assert not stack.messages(john, subject)


# ---------------------------------------------------------------- case 7


def test_deleted_mailbox_is_rejected_and_its_aliases_go_with_cascade(
    api: httpx.Client, stack: MailStack, domain: str
) -> None:
    """7. A mailbox aliases point at is kept (409); with cascade the mailbox and
    those destinations go, and Postfix rejects the mailbox and an alias left
    without destinations, and routes the other alias only to what remains."""
    victim, keeper = f"victim@{domain}", f"keeper@{domain}"
    solo, team = f"solo@{domain}", f"team@{domain}"
    mailbox(api, victim, "summersun")
    mailbox(api, keeper, "autumnleaf")
    alias(api, solo, victim)
    alias(api, team, victim, keeper)
    assert stack.rcpt(victim)[0] == 250
    assert sorted(str(stack.postmap(team, "virtual-alias-maps")).split(",")) == [keeper, victim]

    response = api.delete(f"/mailboxes/{victim}")
    assert response.status_code == 409, response.text
    assert problem_type(response) == PROBLEM + "still-referenced"
    assert stack.rcpt(victim)[0] == 250  # nothing changed
    assert stack.auth_test(victim, "summersun").returncode == 0

    response = api.delete(f"/mailboxes/{victim}", params={"cascade": "true"})
    assert response.status_code == 200, response.text
    deleted = response.json()
    assert deleted["address"] == victim
    removed = deleted["alias_destinations_removed"]
    assert sorted((d["source"], d["destination"]) for d in removed) == [
        (solo, victim),
        (team, victim),
    ]
    assert deleted["maildir_kept"] == str(stack.maildir_root / domain / "victim")

    code, reply = stack.rcpt(victim)
    assert code == 550 and reply.startswith("5.1.1"), reply
    assert stack.auth_test(victim, "summersun").returncode != 0
    # The alias left without destinations is gone: not in the map, rejected.
    assert stack.postmap(solo, "virtual-alias-maps") is None
    code, reply = stack.rcpt(solo)
    assert code == 550 and reply.startswith("5.1.1"), reply
    # The other one routes only to what is left.
    assert stack.postmap(team, "virtual-alias-maps") == keeper
    assert stack.rcpt(team)[0] == 250


# ---------------------------------------------------------------- case 8


def test_deleted_domain_is_refused_by_postfix(
    api: httpx.Client, stack: MailStack, domain: str
) -> None:
    """8. A domain deleted with cascade is no longer ours for Postfix: relaying
    to it is refused (554 5.7.1)."""
    john = f"john@{domain}"
    mailbox(api, john, "summersun")
    alias(api, f"info@{domain}", john)
    alias(api, f"@{domain}", john)
    seen = [john, f"anyone@{domain}"]  # looked up by Postfix before the delete
    for recipient in seen:
        assert stack.rcpt(recipient)[0] == 250  # the mailbox, the catch-all

    response = api.delete(f"/domains/{domain}")
    assert response.status_code == 409, response.text
    assert problem_type(response) == PROBLEM + "domain-not-empty"

    response = api.delete(f"/domains/{domain}", params={"cascade": "true"})
    assert response.status_code == 200, response.text
    deleted = response.json()
    assert (deleted["mailboxes_removed"], deleted["aliases_removed"]) == (1, 2)
    assert deleted["maildirs_kept"] == str(stack.maildir_root / domain)
    assert stack.postmap(domain, "virtual-mailbox-domains") is None

    for recipient in (f"info@{domain}", f"never-seen@{domain}"):
        code, reply = stack.rcpt(recipient)
        assert (code, reply[:5]) == (554, "5.7.1"), reply
        assert "Relay access denied" in reply
    # Each smtpd process keeps the class (ours or not) of up to 100 addresses it
    # resolved for as long as it lives (docs/deploy.md, section 4): one that saw
    # these before the delete may still call them ours and answer "user unknown".
    # Refused either way.
    for recipient in seen:
        code, reply = stack.rcpt(recipient)
        assert (code, reply[:5]) in {(554, "5.7.1"), (550, "5.1.1")}, reply
    assert stack.auth_test(john, "summersun").returncode != 0
