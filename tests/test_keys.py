"""API keys, brute-force limits, the audit trail, and secrets kept out of sight."""

import logging
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from app.config import Settings
from app.main import create_app
from tests.helpers import bearer, make_key, sql
from tests.live import MAILPROV, ROOT


def key_id(key: str) -> str:
    return key.split("_")[1]


# ---------------------------------------------------------------- keys over the API


def test_create_key_shown_once_stored_hashed(client: TestClient, engine: Engine) -> None:
    response = client.post(
        "/keys",
        json={"name": "helpdesk", "domains": ["Example.ORG"], "send_as": ["@Example.org"]},
    )
    assert response.status_code == 201
    created = response.json()
    key = created["key"]
    assert key.startswith(f"mpk_{created['id']}_") and len(key.split("_", 2)[2]) == 43
    assert created["domains"] == ["example.org"] and created["send_as"] == ["@example.org"]
    assert response.headers["location"] == f"/keys/{created['id']}"
    # Only a hash is stored; reading the key back never shows it.
    stored = sql(
        engine, "SELECT secret_hash FROM mailprov_api_keys WHERE key_id = :k", k=created["id"]
    )
    assert key.split("_", 2)[2] not in stored[0][0]
    again = client.get(f"/keys/{created['id']}").json()
    assert "key" not in again and key not in str(client.get("/keys").json())
    # And it works.
    scoped = TestClient(client.app, headers=bearer(key))
    assert scoped.get("/domains").status_code == 200


def test_create_key_bad_input_refused(client: TestClient) -> None:
    for body, field in [
        ({"name": "x", "admin": True, "domains": ["example.org"]}, "body"),
        ({"name": "", "admin": True}, "name"),
        ({"name": "x", "domains": ["not a domain"]}, "domains.0"),
        ({"name": "x", "send_as": ["nobody"]}, "send_as.0"),
        ({"name": "x", "admin": "yes"}, "admin"),
        ({"name": "x", "admin": True, "secret": "mine"}, "secret"),
    ]:
        response = client.post("/keys", json=body)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["field"] == field, body


def test_revoke_key_stops_it(client: TestClient, engine: Engine) -> None:
    key = make_key(engine, name="temp", domains=["example.org"])
    other = TestClient(client.app, headers=bearer(key))
    assert other.get("/domains").status_code == 200
    revoked = client.delete(f"/keys/{key_id(key)}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    response = other.get("/domains")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="mailprov", error="invalid_token"'
    # Revoking again is harmless; an unknown id is 404, a malformed one 422.
    assert client.delete(f"/keys/{key_id(key)}").status_code == 200
    assert client.delete("/keys/0000000000000000").status_code == 404
    assert client.get("/keys/xyz").status_code == 422


def test_expired_key_refused(client: TestClient, engine: Engine) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert (
        TestClient(client.app, headers=bearer(make_key(engine, admin=True, expires_at=soon)))
        .get("/domains")
        .status_code
        == 200
    )
    assert (
        TestClient(client.app, headers=bearer(make_key(engine, admin=True, expires_at=past)))
        .get("/domains")
        .status_code
        == 401
    )


def test_missing_key_is_401_with_challenge(anonymous: TestClient) -> None:
    response = anonymous.get("/mailboxes")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="mailprov"'
    assert response.headers["content-type"] == "application/problem+json"
    assert anonymous.get("/health").status_code == 200
    assert (
        anonymous.get("/mailboxes", headers={"Authorization": "Basic dXNlcjpwdw=="}).status_code
        == 401
    )


def test_last_used_recorded(client: TestClient, engine: Engine) -> None:
    key = make_key(engine, name="user", admin=True)
    assert client.get(f"/keys/{key_id(key)}").json()["last_used_at"] is None
    TestClient(client.app, headers=bearer(key)).get("/domains")
    assert client.get(f"/keys/{key_id(key)}").json()["last_used_at"] is not None


def test_list_keys_pages(client: TestClient, engine: Engine) -> None:
    for i in range(4):
        make_key(engine, name=f"k{i}", domains=["example.org"])
    first = client.get("/keys", params={"limit": 3}).json()
    assert first["total"] == 5  # the client's own admin key too
    second = client.get("/keys", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    ids = [k["id"] for k in first["items"] + second["items"]]
    assert len(ids) == 5 and ids == sorted(ids) and second["next_cursor"] is None


# ---------------------------------------------------------------- the CLI


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"MAILPROV_DATABASE_URL": database_url}
    return subprocess.run(
        [str(MAILPROV), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )


@pytest.mark.slow  # runs the CLI
def test_cli_keys_create_list_revoke(app: FastAPI, database_url: str) -> None:
    created = cli(database_url, "keys", "create", "--admin", "--name", "ops")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("mpk_") and "shown only once" in created.stderr
    with TestClient(app, headers=bearer(key)) as ops:
        assert ops.get("/domains").status_code == 200
    listed = cli(database_url, "keys", "list")
    assert key_id(key) in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    assert cli(database_url, "keys", "revoke", key_id(key)).returncode == 0
    with TestClient(app, headers=bearer(key)) as ops:
        assert ops.get("/domains").status_code == 401
    scoped = cli(
        database_url, "keys", "create", "--name", "h", "--domain", "Example.org", "--read-only"
    )
    assert scoped.returncode == 0, scoped.stderr
    refused = cli(database_url, "keys", "create", "--name", "bad", "--admin", "--domain", "x.org")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert cli(database_url, "keys", "revoke", "0000000000000000").returncode != 0


@pytest.mark.slow  # runs the CLI
def test_cli_bad_setting_is_one_line(database_url: str) -> None:
    env = os.environ | {"MAILPROV_DATABASE_URL": database_url, "MAILPROV_BCRYPT_COST": "99"}
    done = subprocess.run(
        [str(MAILPROV), "migrate"], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode != 0
    assert done.stderr.startswith("mailprov: invalid settings: MAILPROV_BCRYPT_COST")
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------- brute force


@pytest.fixture
def two_instances(settings: Settings, engine: Engine) -> Iterator[tuple[TestClient, TestClient]]:
    """Two copies of the service on one database, as behind a load balancer."""
    limited = settings.model_copy(
        update={"AUTH_FAILURE_LIMIT": 5, "AUTH_FAILURE_WINDOW": 60, "AUTH_BLOCK_SECONDS": 30}
    )
    first, second = create_app(limited), create_app(limited)
    with TestClient(first) as a, TestClient(second) as b:
        yield a, b
    first.state.engine.dispose()
    second.state.engine.dispose()


def test_burst_of_bad_keys_blocked_across_instances(
    two_instances: tuple[TestClient, TestClient], engine: Engine
) -> None:
    a, b = two_instances
    good = bearer(make_key(engine, admin=True))
    bad = bearer("mpk_0123456789abcdef_" + "B" * 43)
    statuses = [(a if i % 2 else b).get("/domains", headers=bad).status_code for i in range(8)]
    # Five failures in all, whichever copy saw them; then both copies answer 429.
    assert statuses == [401, 401, 401, 401, 429, 429, 429, 429]
    for instance in (a, b):
        blocked = instance.get("/domains", headers=good)
        assert blocked.status_code == 429
        assert blocked.headers["content-type"] == "application/problem+json"
        assert 1 <= int(blocked.headers["retry-after"]) <= 30
    # Another client address is not affected.
    with TestClient(a.app, client=("192.0.2.7", 4000)) as elsewhere:
        assert elsewhere.get("/domains", headers=good).status_code == 200
    # When the block has passed, the right key works again.
    sql(engine, "UPDATE mailprov_auth_failures SET blocked_until = :t", t=datetime(2000, 1, 1))
    assert a.get("/domains", headers=good).status_code == 200


def test_missing_key_does_not_count_as_failure(
    two_instances: tuple[TestClient, TestClient],
) -> None:
    a, _ = two_instances
    assert [a.get("/domains").status_code for _ in range(8)] == [401] * 8


# ---------------------------------------------------------------- audit trail


def test_audit_records_changes_with_key_and_outcome(client: TestClient, engine: Engine) -> None:
    helper_key = make_key(engine, name="helpdesk", domains=["example.org"])
    helper = TestClient(client.app, headers=bearer(helper_key))
    client.post("/domains", json={"name": "example.org"})
    helper.post("/mailboxes", json={"address": "john@example.org", "password": "pw"})
    helper.post("/mailboxes", json={"address": "john@example.org", "password": "pw"})  # 409
    helper.post("/domains", json={"name": "mine.org"})  # 403
    client.get("/domains")  # reads are not recorded
    entries = client.get("/audit").json()["items"]
    summary = [
        (e["action"], e["target"], e["key_name"], e["outcome"], e["status"]) for e in entries
    ]
    assert summary == [
        ("create_domain", "mine.org", "helpdesk", "forbidden", 403),
        ("create_mailbox", "john@example.org", "helpdesk", "mailbox-exists", 409),
        ("create_mailbox", "john@example.org", "helpdesk", "success", 201),
        ("create_domain", "example.org", "admin", "success", 201),
    ]
    assert all(e["client"] == "testclient" and e["key_id"] for e in entries)
    assert entries[2]["key_id"] == key_id(helper_key)


def test_audit_filters_and_pages(client: TestClient, engine: Engine) -> None:
    client.post("/domains", json={"name": "example.org"})
    for i in range(5):
        client.post("/mailboxes", json={"address": f"u{i}@example.org", "password": "pw"})
    client.patch("/mailboxes/u1@example.org", json={"quota": 9})
    by_target = client.get("/audit", params={"target": "u1@example.org"}).json()
    assert [e["action"] for e in by_target["items"]] == ["update_mailbox", "create_mailbox"]
    by_action = client.get("/audit", params={"action": "create_mailbox", "limit": 2}).json()
    assert by_action["total"] == 5 and len(by_action["items"]) == 2
    rest = client.get(
        "/audit",
        params={"action": "create_mailbox", "limit": 10, "cursor": by_action["next_cursor"]},
    ).json()
    assert len(rest["items"]) == 3
    ids = [e["id"] for e in by_action["items"] + rest["items"]]
    assert ids == sorted(ids, reverse=True)
    admin_id = client.get("/keys").json()["items"][0]["id"]
    assert client.get("/audit", params={"key": admin_id}).json()["total"] == 7
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert client.get("/audit", params={"since": future}).json()["total"] == 0
    assert client.get("/audit", params={"until": future}).json()["total"] == 7
    assert client.get("/audit", params={"cursor": "abc"}).status_code == 422


def test_audit_change_and_entry_commit_together(client: TestClient, engine: Engine) -> None:
    # A lost uniqueness race rolls the change back and is recorded as the conflict it was.
    client.post("/domains", json={"name": "example.org"})
    sql_count = sql(engine, "SELECT COUNT(*) FROM mailprov_audit WHERE outcome = 'success'")
    assert sql_count == [(1,)]


@pytest.mark.slow  # runs the CLI
def test_audit_purge_keeps_recent(client: TestClient, engine: Engine, database_url: str) -> None:
    client.post("/domains", json={"name": "example.org"})
    sql(engine, "UPDATE mailprov_audit SET at = :t", t=datetime(2001, 1, 1))
    client.post("/domains", json={"name": "example.net"})
    done = cli(database_url, "audit-purge")
    assert done.returncode == 0 and "purged 1 " in done.stderr
    assert [e["target"] for e in client.get("/audit").json()["items"]] == ["example.net"]


# ---------------------------------------------------------------- secrets


def test_no_secret_in_responses_logs_or_audit(
    client: TestClient, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password, new_password = "Summer-Sun-4711", "Winter-Moon-0815"
    bad_key = "mpk_0123456789abcdef_" + "C" * 43
    bodies = []
    client.post("/domains", json={"name": "example.org"})
    for call in [
        lambda: client.post("/mailboxes", json={"address": "a@example.org", "password": password}),
        lambda: client.patch("/mailboxes/a@example.org", json={"password": new_password}),
        lambda: client.post(
            "/mailboxes", json={"address": "b@example.org", "password": password + "\n"}
        ),
        lambda: client.get("/mailboxes"),
        lambda: client.get("/mailboxes/a@example.org"),
        lambda: client.get("/audit"),
        lambda: client.get("/keys"),
        lambda: client.get("/domains", headers=bearer(bad_key)),
        lambda: client.post(
            "/domains",
            content=b'{"name": "' + password.encode(),
            headers={"content-type": "application/json"},
        ),
    ]:
        bodies.append(call().text)
    [(stored_hash,)] = sql(engine, "SELECT password FROM virtual_users")
    admin_key = client.headers["authorization"].split()[1]
    secrets = [
        password,
        new_password,
        stored_hash,
        stored_hash.partition("}")[2],
        admin_key,
        admin_key.split("_", 2)[2],
        bad_key,
    ]
    audit_rows = str(sql(engine, "SELECT * FROM mailprov_audit"))
    logs = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    for secret in secrets:
        for where, text in [
            ("responses", "\n".join(bodies)),
            ("audit", audit_rows),
            ("logs", logs),
        ]:
            assert secret not in text, (secret[:12], where)
    assert "BLF-CRYPT" not in "\n".join(bodies)
