"""The password rules (check_password) and new {BLF-CRYPT} hashes (hash_password),
checked by implementations other than the one that wrote them (tests/hashing.py)."""

import re

import pytest

from app.security import HASH_MAX_LENGTH, PASSWORD_MAX_BYTES, check_password, hash_password
from tests.hashing import (
    BCRYPT_RE,
    CONTROL_CHARACTERS,
    PASSWORDS_AT_LIMIT,
    PASSWORDS_OVER_LIMIT,
    assert_not_leaked,
    bcrypt_verifies,
    bcrypt_with_ident,
    crypt,
    crypt_verifies,
    passlib_verifies,
    with_control,
)
from tests.helpers import TEST_COST

# ---------------------------------------------------------------- check_password


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
    password = with_control(char, where)
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
