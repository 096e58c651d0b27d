"""Passwords and hashes through the API: stored as Dovecot reads them, refused
with the field named, never echoed, logged or answered back; hashing kept off
the event loop."""

import asyncio
import inspect
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

import app.routes.mailboxes as mailbox_routes
from app.config import Settings
from app.security import HASH_MAX_LENGTH, hash_password
from tests.hashing import (
    BCRYPT_RE,
    INVALID_PASSWORDS,
    PASSWORDS_AT_LIMIT,
    PREHASH_PASSWORD,
    PREHASHED,
    PROBLEM,
    REFUSED_HASH_NAMES,
    REFUSED_HASHES,
    UNDECODABLE_ARGON2,
    argon2_of_total_length,
    assert_not_leaked,
    assert_problem,
    bcrypt_verifies,
    bcrypt_with_ident,
    crypt_verifies,
    given_secret,
)
from tests.helpers import TEST_COST, sql

ADDRESS = "john@example.org"
PASSWORD = "Summer-Sun-2024!"


@pytest.fixture
def domain(client: TestClient) -> str:
    response = client.post("/domains", json={"name": "example.org"})
    assert response.status_code == 201, response.text
    return "example.org"


def stored_password(engine: Engine, address: str = ADDRESS) -> str:
    rows = sql(engine, "SELECT password FROM virtual_users WHERE email = :email", email=address)
    assert len(rows) == 1
    return str(rows[0][0])


def mailbox_count(engine: Engine) -> int:
    return int(sql(engine, "SELECT count(*) FROM virtual_users")[0][0])


def assert_reads_do_not_leak(client: TestClient, *secrets: str) -> None:
    for path in (
        "/mailboxes",
        f"/mailboxes/{ADDRESS}",
        "/mailboxes?domain=example.org",
        "/domains",
        "/domains/example.org",
    ):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert_not_leaked(response.text, *secrets)


def test_create_mailbox_stores_blf_crypt_2y_with_configured_cost(
    client: TestClient, engine: Engine, domain: str
) -> None:
    response = client.post(
        "/mailboxes", json={"address": ADDRESS, "password": PASSWORD, "quota": 0}
    )
    assert response.status_code == 201, response.text
    assert response.json()["address"] == ADDRESS
    stored = stored_password(engine)
    assert stored.startswith("{BLF-CRYPT}$2y$04$")
    assert re.fullmatch(BCRYPT_RE % TEST_COST, stored)
    digest = stored.removeprefix("{BLF-CRYPT}")
    assert bcrypt_verifies(PASSWORD, digest)
    assert crypt_verifies(PASSWORD, digest)
    assert not bcrypt_verifies(PASSWORD + "x", digest)
    assert not crypt_verifies(PASSWORD + "x", digest)
    assert_not_leaked(response.text, PASSWORD, stored, digest)
    assert_reads_do_not_leak(client, PASSWORD, stored, digest)


@pytest.mark.parametrize("password", PASSWORDS_AT_LIMIT.values(), ids=PASSWORDS_AT_LIMIT.keys())
def test_create_mailbox_72_byte_password_accepted(
    client: TestClient, engine: Engine, domain: str, password: str
) -> None:
    response = client.post("/mailboxes", json={"address": ADDRESS, "password": password})
    assert response.status_code == 201, response.text
    digest = stored_password(engine).removeprefix("{BLF-CRYPT}")
    assert bcrypt_verifies(password, digest)
    assert crypt_verifies(password, digest)
    assert_not_leaked(response.text, password)


@pytest.mark.parametrize("password", INVALID_PASSWORDS.values(), ids=INVALID_PASSWORDS.keys())
def test_create_mailbox_invalid_password_refused(
    client: TestClient, engine: Engine, domain: str, password: str
) -> None:
    response = client.post("/mailboxes", json={"address": ADDRESS, "password": password})
    assert_problem(response, 422, "password")
    assert response.json()["type"] == "urn:mailprov:problem:validation"
    assert_not_leaked(response.text, password)
    assert mailbox_count(engine) == 0


def test_create_mailbox_empty_password_refused(
    client: TestClient, engine: Engine, domain: str
) -> None:
    response = client.post("/mailboxes", json={"address": ADDRESS, "password": ""})
    assert_problem(response, 422, "password")
    assert mailbox_count(engine) == 0


def test_create_mailbox_lone_surrogate_password_refused(
    client: TestClient, engine: Engine, domain: str
) -> None:
    password = "secret\ud800pw"
    body = json.dumps({"address": ADDRESS, "password": password})  # "\ud800" escape: valid JSON
    response = client.post("/mailboxes", content=body, headers={"content-type": "application/json"})
    assert_problem(response, 422, "password")
    assert_not_leaked(response.text, password)
    assert mailbox_count(engine) == 0


def test_create_mailbox_non_string_password_refused(
    client: TestClient, engine: Engine, domain: str
) -> None:
    response = client.post("/mailboxes", json={"address": ADDRESS, "password": 987654321})
    assert_problem(response, 422, "password")
    assert "987654321" not in response.text


def test_create_mailbox_misspelled_password_field_not_echoed(
    client: TestClient, engine: Engine, domain: str
) -> None:
    response = client.post(
        "/mailboxes", json={"address": ADDRESS, "password": PASSWORD, "passwd": PASSWORD + "2"}
    )
    assert response.status_code == 422
    assert_not_leaked(response.text, PASSWORD, PASSWORD + "2")
    assert mailbox_count(engine) == 0


def test_create_mailbox_does_not_log_secrets(
    client: TestClient, engine: Engine, domain: str, captured_logs: pytest.LogCaptureFixture
) -> None:
    assert (
        client.post("/mailboxes", json={"address": ADDRESS, "password": PASSWORD}).status_code
        == 201
    )
    client.post("/mailboxes", json={"address": "x@example.org", "password": PASSWORD + "\x00"})
    assert_not_leaked(captured_logs.text, PASSWORD, stored_password(engine))


@pytest.mark.parametrize(("scheme", "make"), PREHASHED)
def test_create_mailbox_prehashed_stored_verbatim(
    client: TestClient, engine: Engine, domain: str, scheme: str, make: Callable[[str], str]
) -> None:
    digest = make(PREHASH_PASSWORD)
    value = f"{{{scheme}}}{digest}"
    response = client.post("/mailboxes", json={"address": ADDRESS, "password_hash": value})
    assert response.status_code == 201, response.text
    assert stored_password(engine) == value
    assert_not_leaked(response.text, value, digest, PREHASH_PASSWORD)
    assert_reads_do_not_leak(client, value, digest, PREHASH_PASSWORD)


def test_create_mailbox_150_char_hash_stored_verbatim(
    client: TestClient, engine: Engine, domain: str
) -> None:
    value = argon2_of_total_length(HASH_MAX_LENGTH)
    response = client.post("/mailboxes", json={"address": ADDRESS, "password_hash": value})
    assert response.status_code == 201, response.text
    assert stored_password(engine) == value


@pytest.mark.parametrize("name", REFUSED_HASH_NAMES)
def test_create_mailbox_unknown_or_malformed_hash_refused(
    client: TestClient,
    engine: Engine,
    domain: str,
    name: str,
) -> None:
    value = REFUSED_HASHES[name]
    response = client.post("/mailboxes", json={"address": ADDRESS, "password_hash": value})
    assert_problem(response, 422, "password_hash")
    # Refusals may name the accepted schemes ({BLF-CRYPT}, ...) but never the value given.
    secret = given_secret(value)
    if secret:
        assert_not_leaked(response.text, secret, hash_markers=False)
    assert mailbox_count(engine) == 0


@pytest.mark.parametrize("digest", UNDECODABLE_ARGON2.values(), ids=UNDECODABLE_ARGON2.keys())
def test_create_mailbox_undecodable_argon2_refused(
    client: TestClient, engine: Engine, domain: str, digest: str
) -> None:
    scheme = "ARGON2ID" if digest.startswith("$argon2id$") else "ARGON2I"
    response = client.post(
        "/mailboxes", json={"address": ADDRESS, "password_hash": f"{{{scheme}}}{digest}"}
    )
    assert_problem(response, 422, "password_hash")
    assert mailbox_count(engine) == 0


def test_create_mailbox_password_and_hash_refused(
    client: TestClient, engine: Engine, domain: str
) -> None:
    value = "{BLF-CRYPT}" + bcrypt_with_ident(PREHASH_PASSWORD, "2y")
    response = client.post(
        "/mailboxes", json={"address": ADDRESS, "password": PASSWORD, "password_hash": value}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert "exactly one of password and password_hash" in response.json()["detail"]
    assert_not_leaked(response.text, PASSWORD, value, value.removeprefix("{BLF-CRYPT}"))
    assert mailbox_count(engine) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"address": ADDRESS},
        {"address": ADDRESS, "quota": 10},
        {"address": ADDRESS, "password": None},
    ],
)
def test_create_mailbox_neither_password_nor_hash_refused(
    client: TestClient, engine: Engine, domain: str, body: dict[str, Any]
) -> None:
    response = client.post("/mailboxes", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert "exactly one of password and password_hash" in response.json()["detail"]
    assert mailbox_count(engine) == 0


@pytest.fixture
def mailbox(client: TestClient, engine: Engine, domain: str) -> str:
    response = client.post("/mailboxes", json={"address": ADDRESS, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return stored_password(engine)


def test_update_mailbox_password_changes_hash(
    client: TestClient, engine: Engine, mailbox: str
) -> None:
    new = "Winter-Moon-2025?"
    response = client.patch(f"/mailboxes/{ADDRESS}", json={"password": new})
    assert response.status_code == 200, response.text
    stored = stored_password(engine)
    assert stored != mailbox
    assert re.fullmatch(BCRYPT_RE % TEST_COST, stored)
    digest = stored.removeprefix("{BLF-CRYPT}")
    assert bcrypt_verifies(new, digest)
    assert crypt_verifies(new, digest)
    assert not bcrypt_verifies(PASSWORD, digest)
    assert not crypt_verifies(PASSWORD, digest)
    assert_not_leaked(response.text, new, PASSWORD, stored, mailbox)
    assert_reads_do_not_leak(client, new, PASSWORD, stored, mailbox)


def test_update_mailbox_same_password_rehashed(
    client: TestClient, engine: Engine, mailbox: str
) -> None:
    response = client.patch(f"/mailboxes/{ADDRESS}", json={"password": PASSWORD})
    assert response.status_code == 200
    stored = stored_password(engine)
    assert stored != mailbox  # fresh salt
    assert crypt_verifies(PASSWORD, stored.removeprefix("{BLF-CRYPT}"))


def test_update_mailbox_quota_only_keeps_hash(
    client: TestClient, engine: Engine, mailbox: str
) -> None:
    response = client.patch(f"/mailboxes/{ADDRESS}", json={"quota": 1024})
    assert response.status_code == 200
    assert stored_password(engine) == mailbox
    assert_not_leaked(response.text, PASSWORD, mailbox)


@pytest.mark.parametrize("password", INVALID_PASSWORDS.values(), ids=INVALID_PASSWORDS.keys())
def test_update_mailbox_invalid_password_refused(
    client: TestClient, engine: Engine, mailbox: str, password: str
) -> None:
    response = client.patch(f"/mailboxes/{ADDRESS}", json={"password": password})
    assert_problem(response, 422, "password")
    assert_not_leaked(response.text, password)
    assert stored_password(engine) == mailbox


@pytest.mark.parametrize(("scheme", "make"), PREHASHED)
def test_update_mailbox_prehashed_stored_verbatim(
    client: TestClient,
    engine: Engine,
    mailbox: str,
    scheme: str,
    make: Callable[[str], str],
) -> None:
    digest = make(PREHASH_PASSWORD)
    value = f"{{{scheme}}}{digest}"
    response = client.patch(f"/mailboxes/{ADDRESS}", json={"password_hash": value})
    assert response.status_code == 200, response.text
    assert stored_password(engine) == value
    assert_not_leaked(response.text, value, digest, PREHASH_PASSWORD)


@pytest.mark.parametrize("name", REFUSED_HASH_NAMES)
def test_update_mailbox_unknown_or_malformed_hash_refused(
    client: TestClient,
    engine: Engine,
    mailbox: str,
    name: str,
) -> None:
    value = REFUSED_HASHES[name]
    response = client.patch(f"/mailboxes/{ADDRESS}", json={"password_hash": value})
    assert_problem(response, 422, "password_hash")
    assert stored_password(engine) == mailbox


def test_update_mailbox_password_and_hash_refused(
    client: TestClient, engine: Engine, mailbox: str
) -> None:
    value = "{BLF-CRYPT}" + bcrypt_with_ident(PREHASH_PASSWORD, "2y")
    response = client.patch(
        f"/mailboxes/{ADDRESS}", json={"password": "Other-Pw-1", "password_hash": value}
    )
    assert response.status_code == 422
    assert "at most one of password and password_hash" in response.json()["detail"]
    assert_not_leaked(response.text, "Other-Pw-1", value, value.removeprefix("{BLF-CRYPT}"))
    assert stored_password(engine) == mailbox


def test_update_mailbox_nothing_to_change_refused(
    client: TestClient, engine: Engine, mailbox: str
) -> None:
    response = client.patch(f"/mailboxes/{ADDRESS}", json={})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert stored_password(engine) == mailbox


# ---------------------------------------------------------------- settings and event loop


def test_settings_default_bcrypt_cost_at_least_10(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILPROV_BCRYPT_COST", raising=False)
    assert Settings.model_fields["BCRYPT_COST"].default >= 10
    assert Settings(_env_file=None).BCRYPT_COST >= 10


@pytest.mark.parametrize("name", ["create_mailbox", "update_mailbox"])
def test_hashing_route_is_plain_def(name: str) -> None:
    endpoint = getattr(mailbox_routes, name)
    assert not inspect.iscoroutinefunction(endpoint)
    assert not inspect.iscoroutinefunction(hash_password)


def test_hashing_runs_outside_event_loop(
    client: TestClient, domain: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loops: list[bool] = []

    def recording_hash(password: str, cost: int) -> str:
        try:
            asyncio.get_running_loop()
            loops.append(True)
        except RuntimeError:
            loops.append(False)
        return hash_password(password, cost)

    monkeypatch.setattr(mailbox_routes, "hash_password", recording_hash)
    assert (
        client.post("/mailboxes", json={"address": ADDRESS, "password": PASSWORD}).status_code
        == 201
    )
    assert client.patch(f"/mailboxes/{ADDRESS}", json={"password": PASSWORD}).status_code == 200
    assert loops == [False, False]
