"""Password rules and hashes (app.security), alone and through the API.

Dovecot is the real reader of ``virtual_users.password``: a hash counts as good
only when implementations other than the one that wrote it verify it. New
hashes are checked with the pyca ``bcrypt`` package and with libxcrypt (the
``crypt(3)`` Dovecot itself calls for {BLF-CRYPT} and {SHA*-CRYPT}), reached
through Python's ``crypt`` module. Debian 12's libxcrypt 4.4.33 supports the
``$2y$`` ident, so no ctypes detour is needed for it
(test_libxcrypt_supports_2y_ident guards that assumption). Argon2 hashes are
made and checked with the reference C library (libargon2) through ctypes when
it is installed.
"""

import asyncio
import base64
import ctypes
import ctypes.util
import hashlib
import inspect
import json
import math
import os
import re
import warnings
from collections.abc import Callable
from typing import Any

import bcrypt
import pytest
from fastapi.testclient import TestClient
from passlib.exc import PasslibHashWarning
from passlib.hash import bcrypt as passlib_bcrypt
from passlib.hash import des_crypt, md5_crypt, sha256_crypt, sha512_crypt
from sqlalchemy import Engine

import app.routes.mailboxes as mailbox_routes
from app.config import Settings
from app.security import (
    ACCEPTED_SCHEMES,
    HASH_MAX_LENGTH,
    PASSWORD_MAX_BYTES,
    check_password,
    check_password_hash,
    hash_password,
)
from tests.helpers import TEST_COST, sql

with warnings.catch_warnings():
    # Deprecated since 3.11, removed in 3.13; pytest turns warnings into errors.
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

PROBLEM = "application/problem+json"
HASH_MARKERS = ("BLF-CRYPT", "$2y$")
BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# ---------------------------------------------------------------- independent verifiers


def crypt_verifies(password: str, stored: str) -> bool:
    """libxcrypt's verdict, the way Dovecot reaches it: crypt(pw, hash) == hash."""
    try:
        return crypt.crypt(password, stored) == stored
    except OSError:  # libxcrypt refused the setting string
        return False


def passlib_verifies(password: str, stored: str) -> bool:
    """The writing library's own verdict (not independent: beside the others)."""
    scheme, _, digest = stored.partition("}")
    assert scheme == "{BLF-CRYPT", "only {BLF-CRYPT} hashes are verified here"
    return bool(passlib_bcrypt.verify(password, digest))


def bcrypt_verifies(password: str, stored: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode("utf-8"), stored.encode("ascii"))
    except ValueError:  # pyca bcrypt refused the hash
        return False


def _load_libargon2() -> Any:
    for name in ("libargon2.so.1", ctypes.util.find_library("argon2")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        for variant in ("argon2i", "argon2id"):
            fn = getattr(lib, f"{variant}_hash_encoded")
            fn.argtypes = [ctypes.c_uint32] * 3 + [
                ctypes.c_char_p, ctypes.c_size_t,  # password
                ctypes.c_char_p, ctypes.c_size_t,  # salt
                ctypes.c_size_t,  # hash length
                ctypes.c_char_p, ctypes.c_size_t,  # encoded output
            ]  # fmt: skip
            fn.restype = ctypes.c_int
        lib.argon2_verify.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_int,
        ]
        lib.argon2_verify.restype = ctypes.c_int
        return lib
    return None


LIBARGON2 = _load_libargon2()
ARGON2_TYPES = {"argon2i": 1, "argon2id": 2}  # argon2_type in argon2.h
ARGON2_OK, ARGON2_VERIFY_MISMATCH = 0, -35


def _b64_nopad(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def argon2_hash(variant: str, password: str, *, salt_len: int = 16, hash_len: int = 32) -> str:
    """A PHC-format argon2 hash (m=8 KiB, t=1, p=1: fast); real when libargon2 is there."""
    password_bytes, salt = password.encode("utf-8"), os.urandom(salt_len)
    if LIBARGON2 is None:  # same format, made by hand
        digest = hashlib.blake2b(password_bytes + salt, digest_size=min(hash_len, 64)).digest()
        digest = (digest * math.ceil(hash_len / len(digest)))[:hash_len]
        return f"${variant}$v=19$m=8,t=1,p=1${_b64_nopad(salt)}${_b64_nopad(digest)}"
    out = ctypes.create_string_buffer(512)
    fn = getattr(LIBARGON2, f"{variant}_hash_encoded")
    rc = fn(1, 8, 1, password_bytes, len(password_bytes), salt, salt_len, hash_len, out, 512)
    assert rc == ARGON2_OK, rc
    return out.value.decode("ascii")


def argon2_verify(password: str, encoded: str) -> int:
    variant = encoded.split("$")[1]
    pw = password.encode("utf-8")
    return int(LIBARGON2.argon2_verify(encoded.encode(), pw, len(pw), ARGON2_TYPES[variant]))


def ssha(algorithm: str, password: str, salt: bytes) -> str:
    """Dovecot's {SSHA256}/{SSHA512}: base64(digest(password + salt) + salt)."""
    digest = hashlib.new(algorithm, password.encode("utf-8") + salt).digest()
    return base64.b64encode(digest + salt).decode("ascii")


def ssha_verifies(algorithm: str, password: str, encoded: str) -> bool:
    raw = base64.b64decode(encoded, validate=True)
    size = hashlib.new(algorithm).digest_size
    digest, salt = raw[:size], raw[size:]
    return bool(salt) and hashlib.new(algorithm, password.encode("utf-8") + salt).digest() == digest


def bcrypt_with_ident(password: str, ident: str) -> str:
    """A pyca-bcrypt hash re-labelled $2a$/$2b$/$2y$ (same algorithm for <= 72-byte input)."""
    made = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(TEST_COST)).decode("ascii")
    assert made.startswith("$2b$")
    return f"${ident}${made[4:]}"


def _flip_char(value: str, index: int, alphabet: str, bit: int) -> str:
    index %= len(value)
    flipped = alphabet[alphabet.index(value[index]) ^ bit]
    return value[:index] + flipped + value[index + 1 :]


# ---------------------------------------------------------------- leak checks


def _forms(secret: str) -> set[str]:
    """The secret as it could appear in a JSON body: raw, \\u-escaped, UTF-8."""
    return {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}


def assert_not_leaked(text: str, *secrets: str, hash_markers: bool = True) -> None:
    for secret in secrets:
        assert secret
        for form in _forms(secret):
            assert form not in text
    if hash_markers:
        for marker in HASH_MARKERS:
            assert marker not in text


def assert_problem(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["errors"][0]["field"] == field


# ---------------------------------------------------------------- check_password

PASSWORDS_AT_LIMIT = {
    "ascii": "p" * 72,
    "two-byte": "é" * 36,
    "three-byte": "€" * 24,
    "four-byte": "😀" * 18,
    "mixed": "a" * 70 + "é",
}

PASSWORDS_OVER_LIMIT = {
    "ascii": "p" * 73,
    "two-byte": "é" * 36 + "a",
    "two-byte-straddling": "a" * 71 + "é",  # é occupies bytes 72 and 73
    "three-byte-straddling": "a" * 70 + "€",
    "four-byte-straddling": "a" * 69 + "😀",
    "far-over": "long-password-" * 20,
}

CONTROL_CHARACTERS = {
    "nul": "\x00",
    "newline": "\n",
    "carriage-return": "\r",
    "tab": "\t",
    "del": "\x7f",
    "escape": "\x1b",
    "soh": "\x01",
    "c1-nel": "\x85",
    "c1-csi": "\x9b",
}


def _with_control(char: str, where: str) -> str:
    return {
        "start": char + "secret-pw",
        "middle": "secret" + char + "pw",
        "end": "secret-pw" + char,
    }[where]


@pytest.mark.parametrize("password", PASSWORDS_AT_LIMIT.values(), ids=PASSWORDS_AT_LIMIT.keys())
def test_check_password_exactly_72_bytes_accepted(password: str) -> None:
    assert len(password.encode("utf-8")) == PASSWORD_MAX_BYTES == 72
    assert check_password(password) == password


@pytest.mark.parametrize(
    "password", ["x", "summersun", "pass word with spaces", "Ünïcödé-pässwörd"]
)
def test_check_password_ordinary_accepted(password: str) -> None:
    assert check_password(password) == password


def test_check_password_empty_refused() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        check_password("")


@pytest.mark.parametrize("password", PASSWORDS_OVER_LIMIT.values(), ids=PASSWORDS_OVER_LIMIT.keys())
def test_check_password_over_72_bytes_refused(password: str) -> None:
    assert len(password.encode("utf-8")) > PASSWORD_MAX_BYTES
    with pytest.raises(ValueError, match="longer than 72 bytes") as excinfo:
        check_password(password)
    assert_not_leaked(str(excinfo.value), password)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
@pytest.mark.parametrize("char", CONTROL_CHARACTERS.values(), ids=CONTROL_CHARACTERS.keys())
def test_check_password_control_character_refused(char: str, where: str) -> None:
    password = _with_control(char, where)
    with pytest.raises(ValueError, match="control characters") as excinfo:
        check_password(password)
    assert_not_leaked(str(excinfo.value), password)


def test_check_password_too_long_with_control_character_refused() -> None:
    password = "a" * 80 + "\x00"
    with pytest.raises(ValueError) as excinfo:
        check_password(password)
    assert_not_leaked(str(excinfo.value), password)


def test_check_password_lone_surrogate_refused_without_echo() -> None:
    password = "secret\ud800pw"
    with pytest.raises(ValueError) as excinfo:
        check_password(password)
    message = str(excinfo.value)
    assert_not_leaked(message, password)
    assert "ud800" not in message
    assert "position" not in message


# ---------------------------------------------------------------- hash_password

BCRYPT_RE = r"\{BLF-CRYPT\}\$2y\$%02d\$[./A-Za-z0-9]{53}"
VERIFY_PASSWORDS = {
    "ascii": "summersun",
    "spaces-and-quotes": "p@ss w0rd \"'\\ {}",
    **{f"72-{k}": v for k, v in PASSWORDS_AT_LIMIT.items()},
}


@pytest.mark.parametrize("cost", [4, 5, 10])
def test_hash_password_blf_crypt_2y_with_two_digit_cost(cost: int) -> None:
    stored = hash_password("summersun", cost)
    assert stored.startswith(f"{{BLF-CRYPT}}$2y${cost:02d}$")
    assert re.fullmatch(BCRYPT_RE % cost, stored)
    assert len(stored) <= HASH_MAX_LENGTH == 150


@pytest.mark.parametrize("password", VERIFY_PASSWORDS.values(), ids=VERIFY_PASSWORDS.keys())
def test_hash_password_verifies_with_pyca_bcrypt_and_libxcrypt(password: str) -> None:
    stored = hash_password(password, TEST_COST)
    digest = stored.removeprefix("{BLF-CRYPT}")
    assert bcrypt_verifies(password, digest)
    assert crypt_verifies(password, digest)
    assert passlib_verifies(password, stored)


@pytest.mark.parametrize(
    ("password", "wrong"),
    [
        ("summersun", "summersuN"),
        ("summersun", "summersu"),
        ("summersun", "summersun "),
        ("é" * 36, "é" * 35),
        ("é" * 36, "e" * 36),
        ("p" * 72, "p" * 71 + "q"),  # the 72nd byte still counts
    ],
)
def test_hash_password_wrong_password_fails_both(password: str, wrong: str) -> None:
    digest = hash_password(password, TEST_COST).removeprefix("{BLF-CRYPT}")
    assert not bcrypt_verifies(wrong, digest)
    assert not crypt_verifies(wrong, digest)
    assert not passlib_verifies(wrong, "{BLF-CRYPT}" + digest)


def test_hash_password_salts_each_hash() -> None:
    assert hash_password("summersun", TEST_COST) != hash_password("summersun", TEST_COST)


@pytest.mark.parametrize("password", ["", "p" * 73, "a" * 71 + "é", "secret\x00pw", "secret\npw"])
def test_hash_password_invalid_password_refused(password: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        hash_password(password, TEST_COST)
    if password:
        assert_not_leaked(str(excinfo.value), password)


def test_libxcrypt_supports_2y_ident() -> None:
    setting = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**TEST_COST)
    assert setting.startswith("$2b$04$")
    result = crypt.crypt("summersun", "$2y$" + setting[4:])
    assert result.startswith("$2y$04$")
    assert bcrypt_verifies("summersun", result)


def test_pyca_bcrypt_accepts_2y_ident() -> None:
    assert bcrypt_verifies("summersun", bcrypt_with_ident("summersun", "2y"))


# ---------------------------------------------------------------- pre-hashed passwords

PREHASH_PASSWORD = "migrated-secret-1"


def _prehashed(scheme: str, make: Callable[[str], str]) -> Any:
    return pytest.param(scheme, make, id=f"{scheme}:{make.__name__}")


def blf_2a(pw: str) -> str:
    return bcrypt_with_ident(pw, "2a")


def blf_2b(pw: str) -> str:
    return bcrypt_with_ident(pw, "2b")


def blf_2y(pw: str) -> str:
    return bcrypt_with_ident(pw, "2y")


def sha512_default_rounds(pw: str) -> str:
    return str(sha512_crypt.using(rounds=5000).hash(pw))


def sha512_explicit_rounds(pw: str) -> str:
    return str(sha512_crypt.using(rounds=1000).hash(pw))


def sha256_default_rounds(pw: str) -> str:
    return str(sha256_crypt.using(rounds=5000).hash(pw))


def sha256_explicit_rounds(pw: str) -> str:
    return str(sha256_crypt.using(rounds=1000).hash(pw))


def argon2i(pw: str) -> str:
    return argon2_hash("argon2i", pw)


def argon2id(pw: str) -> str:
    return argon2_hash("argon2id", pw)


def ssha512_8_byte_salt(pw: str) -> str:
    return ssha("sha512", pw, os.urandom(8))


def ssha512_16_byte_salt(pw: str) -> str:
    return ssha("sha512", pw, os.urandom(16))


def ssha256_4_byte_salt(pw: str) -> str:
    return ssha("sha256", pw, os.urandom(4))


def ssha256_16_byte_salt(pw: str) -> str:
    return ssha("sha256", pw, os.urandom(16))


PREHASHED = [
    _prehashed("BLF-CRYPT", blf_2a),
    _prehashed("BLF-CRYPT", blf_2b),
    _prehashed("BLF-CRYPT", blf_2y),
    _prehashed("SHA512-CRYPT", sha512_default_rounds),
    _prehashed("SHA512-CRYPT", sha512_explicit_rounds),
    _prehashed("SHA256-CRYPT", sha256_default_rounds),
    _prehashed("SHA256-CRYPT", sha256_explicit_rounds),
    _prehashed("ARGON2I", argon2i),
    _prehashed("ARGON2ID", argon2id),
    _prehashed("SSHA512", ssha512_8_byte_salt),
    _prehashed("SSHA512", ssha512_16_byte_salt),
    _prehashed("SSHA256", ssha256_4_byte_salt),
    _prehashed("SSHA256", ssha256_16_byte_salt),
]


def _independently_verifies(scheme: str, password: str, digest: str) -> bool:
    if scheme == "BLF-CRYPT":
        return bcrypt_verifies(password, digest) and crypt_verifies(password, digest)
    if scheme in ("SHA512-CRYPT", "SHA256-CRYPT"):
        return crypt_verifies(password, digest)
    if scheme in ("SSHA512", "SSHA256"):
        return ssha_verifies(scheme.removeprefix("S").lower(), password, digest)
    assert scheme in ("ARGON2I", "ARGON2ID")
    if LIBARGON2 is None:
        pytest.skip("libargon2 is not installed")
    return argon2_verify(password, digest) == ARGON2_OK


def test_prehashed_cases_cover_every_accepted_scheme() -> None:
    assert {case.values[0] for case in PREHASHED} == set(ACCEPTED_SCHEMES)


@pytest.mark.parametrize(("scheme", "make"), PREHASHED)
def test_prehashed_test_hashes_verify_independently(
    scheme: str, make: Callable[[str], str]
) -> None:
    digest = make(PREHASH_PASSWORD)
    assert _independently_verifies(scheme, PREHASH_PASSWORD, digest)
    assert not _independently_verifies(scheme, PREHASH_PASSWORD + "x", digest)


@pytest.mark.parametrize(("scheme", "make"), PREHASHED)
def test_check_password_hash_known_scheme_accepted(scheme: str, make: Callable[[str], str]) -> None:
    value = f"{{{scheme}}}{make(PREHASH_PASSWORD)}"
    assert len(value) <= HASH_MAX_LENGTH
    assert check_password_hash(value) == value


def _argon2_of_total_length(total: int) -> str:
    """A {ARGON2ID} value of exactly ``total`` characters, made by growing the hash."""
    for hash_len in range(16, 128):
        value = "{ARGON2ID}" + argon2_hash("argon2id", PREHASH_PASSWORD, hash_len=hash_len)
        if len(value) == total:
            return value
    raise AssertionError(f"no argon2 hash length gives {total} characters")


def test_check_password_hash_max_length_accepted() -> None:
    value = _argon2_of_total_length(HASH_MAX_LENGTH)
    assert len(value) == 150
    assert check_password_hash(value) == value


def test_check_password_hash_one_over_max_length_refused() -> None:
    value = _argon2_of_total_length(HASH_MAX_LENGTH + 1)
    with pytest.raises(ValueError, match="longer than 150") as excinfo:
        check_password_hash(value)
    assert_not_leaked(str(excinfo.value), value.removeprefix("{ARGON2ID}"), hash_markers=False)


def _refused_hashes() -> dict[str, str]:
    pw = PREHASH_PASSWORD
    b2y = bcrypt_with_ident(pw, "2y")
    s512 = sha512_default_rounds(pw)
    s256 = sha256_default_rounds(pw)
    a2id = argon2_hash("argon2id", pw)
    b64 = "c2FsdHNhbHQ"
    return {
        # weak or unknown schemes
        "plain": "{PLAIN}" + pw,
        "plain-trunc": "{PLAIN-TRUNC}" + pw,
        "cleartext": "{CLEARTEXT}" + pw,
        "md5-crypt": "{MD5-CRYPT}" + md5_crypt.hash(pw),
        "crypt-des": "{CRYPT}" + des_crypt.hash(pw),
        "crypt-bcrypt": "{CRYPT}" + b2y,
        "sha512-unsalted": "{SHA512}"
        + base64.b64encode(hashlib.sha512(pw.encode()).digest()).decode(),
        "ssha1": "{SSHA}" + ssha("sha1", pw, b"saltsalt"),
        "argon2d": "{ARGON2D}$argon2d$v=19$m=8,t=1,p=1$" + b64 + "$" + b64 * 3,
        # no prefix, or not the exact upper-case form Dovecot writes
        "no-prefix-bcrypt": b2y,
        "no-prefix-sha512": s512,
        "lowercase-scheme": "{blf-crypt}" + b2y,
        "mixed-case-scheme": "{Blf-Crypt}" + b2y,
        "lowercase-sha512": "{sha512-crypt}" + s512,
        "unclosed-brace": "{BLF-CRYPT" + b2y,
        "space-after-prefix": "{BLF-CRYPT} " + b2y,
        "trailing-space": "{BLF-CRYPT}" + b2y + " ",
        "trailing-newline": "{BLF-CRYPT}" + b2y + "\n",
        "empty-digest": "{BLF-CRYPT}",
        "empty": "",
        # malformed digests
        "bcrypt-truncated": "{BLF-CRYPT}" + b2y[:-1],
        "bcrypt-extended": "{BLF-CRYPT}" + b2y + "A",
        "bcrypt-bad-character": "{BLF-CRYPT}" + b2y[:-1] + "!",
        "bcrypt-2x-ident": "{BLF-CRYPT}$2x$" + b2y[4:],
        "bcrypt-2-ident": "{BLF-CRYPT}$2$" + b2y[4:],
        "bcrypt-one-digit-cost": "{BLF-CRYPT}$2y$4$" + b2y[7:],
        "bcrypt-cost-32": "{BLF-CRYPT}$2y$32$" + b2y[7:],
        "bcrypt-stub": "{BLF-CRYPT}$2y$04$short",
        "sha512-as-sha256": "{SHA256-CRYPT}" + s512,
        "sha256-as-sha512": "{SHA512-CRYPT}" + s256,
        "sha512-truncated": "{SHA512-CRYPT}" + s512[:-5],
        "sha512-bad-character": "{SHA512-CRYPT}" + s512[:-1] + "!",
        "bcrypt-as-sha512": "{SHA512-CRYPT}" + b2y,
        "argon2id-as-argon2i": "{ARGON2I}" + a2id,
        "argon2-version-16": "{ARGON2ID}" + a2id.replace("v=19", "v=16"),
        "argon2-no-version": "{ARGON2ID}" + a2id.replace("v=19$", ""),
        "argon2-no-hash": "{ARGON2ID}" + a2id.rpartition("$")[0],
        "argon2-padded": "{ARGON2ID}" + a2id + "==",
        "argon2-extra-field": "{ARGON2ID}" + a2id + "$x",
        "ssha512-no-salt": "{SSHA512}" + base64.b64encode(hashlib.sha512(b"x").digest()).decode(),
        "ssha256-no-salt": "{SSHA256}" + base64.b64encode(hashlib.sha256(b"x").digest()).decode(),
        "ssha512-too-short": "{SSHA512}" + base64.b64encode(b"x" * 40).decode(),
        "ssha-not-base64": "{SSHA512}" + "!" * 100,
        "ssha-missing-padding": "{SSHA256}" + base64.b64encode(b"x" * 40).decode().rstrip("="),
        "ssha-non-ascii": "{SSHA256}" + "é" * 44,
        # too long for varchar(150), though well-formed
        "ssha512-long-salt": "{SSHA512}" + ssha("sha512", pw, b"s" * 48),
        "argon2-151-chars": _argon2_of_total_length(HASH_MAX_LENGTH + 1),
    }


REFUSED_HASH_NAMES = list(_refused_hashes())


def _given_secret(value: str) -> str:
    """The part of a refused value that must not be echoed: the digest, or all of it
    when there is no scheme prefix. Empty when there is nothing secret to look for."""
    prefix, brace, digest = value.partition("}")
    return digest.strip() if brace and prefix.startswith("{") else value.strip()


@pytest.fixture(scope="module")
def refused_hashes() -> dict[str, str]:
    return _refused_hashes()


@pytest.mark.parametrize("name", REFUSED_HASH_NAMES)
def test_check_password_hash_unknown_or_malformed_refused(
    name: str, refused_hashes: dict[str, str]
) -> None:
    value = refused_hashes[name]
    with pytest.raises(ValueError) as excinfo:
        check_password_hash(value)
    secret = _given_secret(value)
    if secret:
        assert_not_leaked(str(excinfo.value), secret, hash_markers=False)


def test_check_password_hash_long_ssha512_is_over_150() -> None:
    assert len(_refused_hashes()["ssha512-long-salt"]) > HASH_MAX_LENGTH


UNDECODABLE_ARGON2 = {
    "zero-cost-one-char-fields": "$argon2id$v=19$m=0,t=0,p=0$a$a",
    "one-byte-salt-and-hash": "$argon2id$v=19$m=8,t=1,p=1$YQ$YQ",
    "memory-below-8-per-lane": "$argon2i$v=19$m=1,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$"
    + "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhcw",
}


@pytest.mark.parametrize("digest", UNDECODABLE_ARGON2.values(), ids=UNDECODABLE_ARGON2.keys())
def test_libargon2_refuses_undecodable_argon2(digest: str) -> None:
    # A decodable hash with the wrong password gives VERIFY_MISMATCH; these fail earlier.
    assert argon2_verify("anything", digest) not in (ARGON2_OK, ARGON2_VERIFY_MISMATCH)


@pytest.mark.parametrize("digest", UNDECODABLE_ARGON2.values(), ids=UNDECODABLE_ARGON2.keys())
def test_check_password_hash_undecodable_argon2_refused(digest: str) -> None:
    scheme = "ARGON2ID" if digest.startswith("$argon2id$") else "ARGON2I"
    with pytest.raises(ValueError):
        check_password_hash(f"{{{scheme}}}{digest}")


def _noncanonical_bcrypt_salt(pw: str) -> str:
    # Salt: 22 characters for 16 bytes; the last one (index 28) carries 4 unused bits.
    return _flip_char(bcrypt_with_ident(pw, "2y"), 28, BCRYPT_ALPHABET, 1)


def _noncanonical_bcrypt_checksum(pw: str) -> str:
    # Checksum: 31 characters for 23 bytes; the last one carries 2 unused bits.
    return _flip_char(bcrypt_with_ident(pw, "2y"), 59, BCRYPT_ALPHABET, 1)


def _noncanonical_sha512_crypt(pw: str) -> str:
    # The last of 86 characters holds 2 bits: values 0-3 only.
    return _flip_char(sha512_default_rounds(pw), -1, CRYPT_ALPHABET, 4)


def _noncanonical_sha256_crypt(pw: str) -> str:
    # The last of 43 characters holds 4 bits: values 0-15 only.
    return _flip_char(sha256_default_rounds(pw), -1, CRYPT_ALPHABET, 16)


NONCANONICAL = {
    "bcrypt-salt-padding": ("BLF-CRYPT", _noncanonical_bcrypt_salt),
    "bcrypt-checksum-padding": ("BLF-CRYPT", _noncanonical_bcrypt_checksum),
    "sha512-crypt-padding": ("SHA512-CRYPT", _noncanonical_sha512_crypt),
    "sha256-crypt-padding": ("SHA256-CRYPT", _noncanonical_sha256_crypt),
}


@pytest.mark.parametrize("name", NONCANONICAL)
def test_libxcrypt_never_verifies_noncanonical_encoding(name: str) -> None:
    # crypt(3) re-encodes canonically, so Dovecot's comparison fails even for the right password.
    _, make = NONCANONICAL[name]
    digest = make(PREHASH_PASSWORD)
    assert not crypt_verifies(PREHASH_PASSWORD, digest)
    assert not bcrypt_verifies(PREHASH_PASSWORD, digest)


@pytest.mark.parametrize("name", NONCANONICAL)
def test_check_password_hash_noncanonical_encoding_refused(name: str) -> None:
    scheme, make = NONCANONICAL[name]
    value = f"{{{scheme}}}{make(PREHASH_PASSWORD)}"
    with warnings.catch_warnings():
        # In production passlib's PasslibHashWarning is only a warning: behave like production.
        warnings.simplefilter("ignore", PasslibHashWarning)
        with pytest.raises(ValueError):
            check_password_hash(value)


# ---------------------------------------------------------------- through the API

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


INVALID_PASSWORDS = {
    **{f"over-72-{k}": v for k, v in PASSWORDS_OVER_LIMIT.items()},
    **{f"control-{k}": _with_control(v, "middle") for k, v in CONTROL_CHARACTERS.items()},
    "control-nul-at-end": _with_control("\x00", "end"),
}


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
    value = _argon2_of_total_length(HASH_MAX_LENGTH)
    response = client.post("/mailboxes", json={"address": ADDRESS, "password_hash": value})
    assert response.status_code == 201, response.text
    assert stored_password(engine) == value


@pytest.mark.parametrize("name", REFUSED_HASH_NAMES)
def test_create_mailbox_unknown_or_malformed_hash_refused(
    client: TestClient, engine: Engine, domain: str, name: str, refused_hashes: dict[str, str]
) -> None:
    value = refused_hashes[name]
    response = client.post("/mailboxes", json={"address": ADDRESS, "password_hash": value})
    assert_problem(response, 422, "password_hash")
    # Refusals may name the accepted schemes ({BLF-CRYPT}, ...) but never the value given.
    secret = _given_secret(value)
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
    client: TestClient, engine: Engine, mailbox: str, name: str, refused_hashes: dict[str, str]
) -> None:
    value = refused_hashes[name]
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
