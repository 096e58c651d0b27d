"""What the password tests share: independent verifiers, the test hashes they
check, the classes of good and bad passwords, and leak checks.

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

import base64
import ctypes
import ctypes.util
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import bcrypt
import pytest
from passlib.hash import bcrypt as passlib_bcrypt
from passlib.hash import des_crypt, md5_crypt, sha256_crypt, sha512_crypt

from app.security import HASH_MAX_LENGTH
from tests.helpers import TEST_COST

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


def flip_char(value: str, index: int, alphabet: str, bit: int) -> str:
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


# ---------------------------------------------------------------- passwords

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


def with_control(char: str, where: str) -> str:
    return {
        "start": char + "secret-pw",
        "middle": "secret" + char + "pw",
        "end": "secret-pw" + char,
    }[where]


INVALID_PASSWORDS = {
    **{f"over-72-{k}": v for k, v in PASSWORDS_OVER_LIMIT.items()},
    **{f"control-{k}": with_control(v, "middle") for k, v in CONTROL_CHARACTERS.items()},
    "control-nul-at-end": with_control("\x00", "end"),
}

BCRYPT_RE = r"\{BLF-CRYPT\}\$2y\$%02d\$[./A-Za-z0-9]{53}"

# ---------------------------------------------------------------- pre-hashed passwords

PREHASH_PASSWORD = "migrated-secret-1"


def _case(scheme: str, make: Callable[[str], str]) -> Any:
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
    _case("BLF-CRYPT", blf_2a),
    _case("BLF-CRYPT", blf_2b),
    _case("BLF-CRYPT", blf_2y),
    _case("SHA512-CRYPT", sha512_default_rounds),
    _case("SHA512-CRYPT", sha512_explicit_rounds),
    _case("SHA256-CRYPT", sha256_default_rounds),
    _case("SHA256-CRYPT", sha256_explicit_rounds),
    _case("ARGON2I", argon2i),
    _case("ARGON2ID", argon2id),
    _case("SSHA512", ssha512_8_byte_salt),
    _case("SSHA512", ssha512_16_byte_salt),
    _case("SSHA256", ssha256_4_byte_salt),
    _case("SSHA256", ssha256_16_byte_salt),
]


def argon2_of_total_length(total: int) -> str:
    """A {ARGON2ID} value of exactly ``total`` characters, made by growing the hash."""
    for hash_len in range(16, 128):
        value = "{ARGON2ID}" + argon2_hash("argon2id", PREHASH_PASSWORD, hash_len=hash_len)
        if len(value) == total:
            return value
    raise AssertionError(f"no argon2 hash length gives {total} characters")


def refused_hashes() -> dict[str, str]:
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
        "argon2-151-chars": argon2_of_total_length(HASH_MAX_LENGTH + 1),
    }


def given_secret(value: str) -> str:
    """The part of a refused value that must not be echoed: the digest, or all of it
    when there is no scheme prefix. Empty when there is nothing secret to look for."""
    prefix, brace, digest = value.partition("}")
    return digest.strip() if brace and prefix.startswith("{") else value.strip()


REFUSED_HASHES = refused_hashes()
REFUSED_HASH_NAMES = list(REFUSED_HASHES)


UNDECODABLE_ARGON2 = {
    "zero-cost-one-char-fields": "$argon2id$v=19$m=0,t=0,p=0$a$a",
    "one-byte-salt-and-hash": "$argon2id$v=19$m=8,t=1,p=1$YQ$YQ",
    "memory-below-8-per-lane": "$argon2i$v=19$m=1,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$"
    + "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhcw",
}
