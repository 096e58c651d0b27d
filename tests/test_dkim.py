"""DKIM keys through the API, how they are stored, and `mailprov dkim sync`."""

import base64
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import Engine

from app import dkim
from app.config import Settings
from app.db import open_session
from app.dkimsync import MANIFEST, SyncResult, sync
from tests.helpers import api_client, bearer, empty_database, make_key, sql
from tests.live import MAILPROV

SECRET = SecretStr("k" * 20 + "-a-test-secret-of-40-chars")
OTHER = SecretStr("o" * 20 + "-another-secret-40-chars!")
PROBLEM = "urn:mailprov:problem:"


@pytest.fixture
def sealed(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """An admin's client of a service that seals keys with SECRET, example.org hosted."""
    with api_client(settings.model_copy(update={"DKIM_KEY_SECRET": SECRET})) as client:
        assert client.post("/domains", json={"name": "example.org"}).status_code == 201
        yield client
    empty_database(engine)


def stored(engine: Engine, selector: str) -> str:
    rows = sql(engine, "SELECT private_key FROM mailprov_dkim_keys WHERE selector = :s", s=selector)
    assert len(rows) == 1
    return str(rows[0][0])


def states(client: TestClient, domain: str = "example.org") -> dict[str, str]:
    items = client.get(f"/domains/{domain}/dkim").json()["items"]
    return {item["selector"]: item["state"] for item in items}


def test_create_first_key_is_active_rsa_2048(sealed: TestClient, engine: Engine) -> None:
    response = sealed.post("/domains/example.org/dkim", json={})
    assert response.status_code == 201, response.text
    key = response.json()
    assert (key["algorithm"], key["bits"], key["state"]) == ("rsa", 2048, "active")
    assert response.headers["location"] == f"/domains/example.org/dkim/{key['selector']}"
    assert key["record_name"] == f"{key['selector']}._domainkey.example.org."
    prefix = "v=DKIM1; k=rsa; p="
    assert key["record_value"].startswith(prefix)
    public = serialization.load_der_public_key(base64.b64decode(key["record_value"][len(prefix) :]))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    # The private half is sealed in the table and opens to the published key's pair.
    private = dkim.unseal(stored(engine, key["selector"]), "example.org", key["selector"], [SECRET])
    loaded = serialization.load_pem_private_key(private, None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert loaded.public_key().public_numbers() == public.public_numbers()
    assert b"PRIVATE" not in stored(engine, key["selector"]).encode()


def test_answers_and_audit_never_carry_the_private_key(sealed: TestClient, engine: Engine) -> None:
    created = sealed.post("/domains/example.org/dkim", json={"selector": "s1"})
    private = dkim.unseal(stored(engine, "s1"), "example.org", "s1", [SECRET])
    secret_part = private.decode().splitlines()[1]  # a line of the PEM body
    texts = [created.text, sealed.get("/domains/example.org/dkim").text,
             sealed.get("/domains/example.org/dns").text,
             sealed.get("/domains/example.org/dns?format=zone").text]  # fmt: skip
    texts += [str(row) for row in sql(engine, "SELECT * FROM mailprov_audit")]
    for text in texts:
        assert secret_part not in text and "PRIVATE" not in text.upper()
    assert ("create_dkim_key", "s1._domainkey.example.org.") in {
        (row[0], row[1]) for row in sql(engine, "SELECT action, target FROM mailprov_audit")
    }


def test_create_ed25519_key_publishes_raw_public_key(sealed: TestClient, engine: Engine) -> None:
    key = sealed.post("/domains/example.org/dkim", json={"algorithm": "ed25519"}).json()
    assert (key["algorithm"], key["bits"]) == ("ed25519", 256)
    raw = base64.b64decode(key["record_value"].split("p=")[1])
    seed = base64.b64decode(dkim.unseal(stored(engine, key["selector"]), "example.org",
                                        key["selector"], [SECRET]))  # fmt: skip
    private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    assert private.public_key().public_bytes_raw() == raw


@pytest.mark.parametrize(
    "body",
    [{"algorithm": "ed25519", "bits": 2048}, {"bits": 1024}, {"algorithm": "dsa"},
     {"selector": "-bad"}, {"selector": "a.b"}, {"selector": "x" * 64}, {"extra": 1}],
)  # fmt: skip
def test_create_key_with_invalid_input_is_refused(
    sealed: TestClient, body: dict[str, object]
) -> None:
    response = sealed.post("/domains/example.org/dkim", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == PROBLEM + "validation"


def test_create_key_for_unknown_domain_is_404(sealed: TestClient) -> None:
    response = sealed.post("/domains/nowhere.org/dkim", json={})
    assert (response.status_code, response.json()["type"]) == (404, PROBLEM + "domain-not-found")


def test_create_key_with_taken_selector_is_409(sealed: TestClient) -> None:
    assert sealed.post("/domains/example.org/dkim", json={"selector": "S1"}).status_code == 201
    response = sealed.post("/domains/example.org/dkim", json={"selector": "s1"})
    assert (response.status_code, response.json()["type"]) == (409, PROBLEM + "dkim-key-exists")


def test_second_key_waits_pending_until_activated(sealed: TestClient) -> None:
    sealed.post("/domains/example.org/dkim", json={"selector": "one", "algorithm": "ed25519"})
    second = sealed.post(
        "/domains/example.org/dkim", json={"selector": "two", "algorithm": "ed25519"}
    )
    assert second.json()["state"] == "pending"
    assert states(sealed) == {"one": "active", "two": "pending"}
    response = sealed.patch("/domains/example.org/dkim/two", json={"state": "active"})
    assert response.status_code == 200 and response.json()["state"] == "active"
    assert states(sealed) == {"one": "retired", "two": "active"}
    # And back: a retired key may sign again.
    sealed.patch("/domains/example.org/dkim/one", json={"state": "active"})
    assert states(sealed) == {"one": "active", "two": "retired"}


def test_rotate_makes_new_key_active_and_keeps_old_published(sealed: TestClient) -> None:
    sealed.post("/domains/example.org/dkim", json={"selector": "old", "algorithm": "ed25519"})
    rotated = sealed.post(
        "/domains/example.org/dkim", json={"algorithm": "ed25519", "activate": True}
    )
    assert rotated.status_code == 201
    new = rotated.json()["selector"]
    assert states(sealed) == {"old": "retired", new: "active"}
    names = [r["name"] for r in sealed.get("/domains/example.org/dns").json()["records"]]
    assert "old._domainkey.example.org." in names and f"{new}._domainkey.example.org." in names


def test_delete_active_key_needs_force(sealed: TestClient) -> None:
    sealed.post("/domains/example.org/dkim", json={"selector": "now", "algorithm": "ed25519"})
    refused = sealed.delete("/domains/example.org/dkim/now")
    assert (refused.status_code, refused.json()["type"]) == (409, PROBLEM + "dkim-key-active")
    done = sealed.delete("/domains/example.org/dkim/now", params={"force": "true"})
    assert done.json() == {"domain": "example.org", "selector": "now",
                           "record_name": "now._domainkey.example.org."}  # fmt: skip
    assert states(sealed) == {}
    missing = sealed.delete("/domains/example.org/dkim/now")
    assert (missing.status_code, missing.json()["type"]) == (404, PROBLEM + "dkim-key-not-found")


def test_delete_domain_removes_its_keys(sealed: TestClient, engine: Engine) -> None:
    sealed.post("/domains/example.org/dkim", json={"algorithm": "ed25519"})
    assert sealed.delete("/domains/example.org").status_code == 200
    assert sql(engine, "SELECT COUNT(*) FROM mailprov_dkim_keys") == [(0,)]


def test_scoped_key_manages_only_its_domains_keys(sealed: TestClient, engine: Engine) -> None:
    sealed.post("/domains", json={"name": "other.org"})
    own = bearer(make_key(engine, domains=["example.org"]))
    created = sealed.post("/domains/example.org/dkim", json={"algorithm": "ed25519"}, headers=own)
    assert created.status_code == 201
    refused = sealed.post("/domains/other.org/dkim", json={"algorithm": "ed25519"}, headers=own)
    assert refused.status_code == 403


def test_create_key_without_secret_stores_it_plain(settings: Settings, engine: Engine) -> None:
    with api_client(settings) as client:
        client.post("/domains", json={"name": "example.org"})
        selector = client.post("/domains/example.org/dkim", json={"algorithm": "ed25519"}).json()[
            "selector"
        ]
        assert stored(engine, selector).startswith("plain:")
    empty_database(engine)


@pytest.mark.slow
def test_reencrypt_seals_plain_and_previous_keys_with_the_current_secret(
    settings: Settings, engine: Engine, database_url: str
) -> None:
    with api_client(settings) as client:  # no secret: stored plain
        client.post("/domains", json={"name": "example.org"})
        client.post("/domains/example.org/dkim", json={"selector": "p1", "algorithm": "ed25519"})
    with api_client(settings.model_copy(update={"DKIM_KEY_SECRET": OTHER})) as client:
        client.post("/domains/example.org/dkim", json={"selector": "o1", "algorithm": "ed25519"})
    before = {s: dkim.unseal(stored(engine, s), "example.org", s, [OTHER]) for s in ("p1", "o1")}
    environment = os.environ | {
        "MAILPROV_DATABASE_URL": database_url,
        "MAILPROV_DKIM_KEY_SECRET": SECRET.get_secret_value(),
        "MAILPROV_DKIM_KEY_SECRET_PREVIOUS": OTHER.get_secret_value(),
    }
    done = subprocess.run([str(MAILPROV), "dkim", "reencrypt"], env=environment,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 key(s) sealed" in done.stderr
    for selector, private in before.items():
        assert dkim.is_sealed_with(stored(engine, selector), SECRET)
        assert dkim.unseal(stored(engine, selector), "example.org", selector, [SECRET]) == private
    without = os.environ | {"MAILPROV_DATABASE_URL": database_url}
    refused = subprocess.run([str(MAILPROV), "dkim", "reencrypt"], env=without,
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert refused.returncode == 1 and "MAILPROV_DKIM_KEY_SECRET" in refused.stderr
    empty_database(engine)


# ---------------------------------------------------------------- sealing


def test_unseal_with_wrong_secret_or_other_domain_fails() -> None:
    sealed_key = dkim.seal(b"private", "example.org", "s1", SECRET)
    assert dkim.unseal(sealed_key, "example.org", "s1", [OTHER, SECRET]) == b"private"
    with pytest.raises(dkim.KeyUnavailable):
        dkim.unseal(sealed_key, "example.org", "s1", [OTHER])
    with pytest.raises(dkim.KeyUnavailable):  # a row copied to another domain
        dkim.unseal(sealed_key, "example.net", "s1", [SECRET])
    with pytest.raises(dkim.KeyUnavailable):  # another selector
        dkim.unseal(sealed_key, "example.org", "s2", [SECRET])


@settings(max_examples=50, deadline=None)
@given(
    private=st.binary(max_size=3000),
    domain=st.from_regex(r"[a-z0-9]{1,20}\.[a-z]{2,6}", fullmatch=True),
    selector=st.from_regex(r"[a-z0-9]{1,30}", fullmatch=True),
    secret=st.text(min_size=32, max_size=80),
)
def test_seal_then_unseal_returns_the_key(
    private: bytes, domain: str, selector: str, secret: str
) -> None:
    key = SecretStr(secret)
    sealed_key = dkim.seal(private, domain, selector, key)
    assert dkim.is_sealed_with(sealed_key, key)
    assert private == dkim.unseal(sealed_key, domain, selector, [key])
    if private:
        assert base64.b64encode(private).decode() not in sealed_key


# ---------------------------------------------------------------- mailprov dkim sync


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sync_writes_key_files_and_map_idempotently(
    sealed: TestClient, engine: Engine, tmp_path: Path
) -> None:
    keys, selector_map = tmp_path / "dkim", tmp_path / "dkim_selectors.map"
    (keys).mkdir()
    (keys / "hand-made.example.com.dkim.key").write_text("not ours")
    sealed.post("/domains/example.org/dkim", json={"selector": "one"})  # rsa, active
    sealed.post("/domains/example.org/dkim", json={"selector": "two", "algorithm": "ed25519"})

    def run() -> SyncResult:
        with open_session(engine) as session:
            return sync(session, keys, selector_map, [SECRET], None)

    first = run()
    assert sorted(first.written) == ["example.org.one.key", "example.org.two.key"]
    assert (keys / "example.org.one.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (keys / "example.org.two.key").read_bytes() == base64.b64encode(
        base64.b64decode((keys / "example.org.two.key").read_bytes())
    )
    assert _mode(keys / "example.org.one.key") == 0o640 and _mode(keys) == 0o750
    assert selector_map.read_text().splitlines()[1:] == ["example.org one"]
    second = run()
    assert (second.written, second.removed, second.map_changed) == ([], [], False)

    sealed.patch("/domains/example.org/dkim/two", json={"state": "active"})
    sealed.delete("/domains/example.org/dkim/one")
    third = run()
    assert (third.removed, third.map_changed) == (["example.org.one.key"], True)
    assert selector_map.read_text().splitlines()[1:] == ["example.org two"]
    assert (keys / "hand-made.example.com.dkim.key").read_text() == "not ours"
    assert (keys / MANIFEST).read_text() == "example.org.two.key\n"
    assert not [p for p in os.listdir(keys) if p.startswith(".example")]  # no temporaries left


def test_sync_with_wrong_secret_reports_and_keeps_going(
    sealed: TestClient, engine: Engine, tmp_path: Path
) -> None:
    sealed.post("/domains/example.org/dkim", json={"selector": "one", "algorithm": "ed25519"})
    with open_session(engine) as session:
        result = sync(session, tmp_path / "k", tmp_path / "map", [OTHER], None)
    assert len(result.errors) == 1 and "one._domainkey.example.org" in result.errors[0]
    assert result.written == [] and result.signing == 0
    assert (tmp_path / "map").read_text().splitlines()[1:] == []
