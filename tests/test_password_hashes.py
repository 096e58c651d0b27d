"""Pre-hashed passwords (check_password_hash): every accepted scheme, checked by an
independent implementation, and the malformed or weak ones refused without echo."""

import warnings
from collections.abc import Callable

import pytest
from passlib.exc import PasslibHashWarning

from app.security import ACCEPTED_SCHEMES, HASH_MAX_LENGTH, check_password_hash
from tests.hashing import (
    ARGON2_OK,
    ARGON2_VERIFY_MISMATCH,
    BCRYPT_ALPHABET,
    CRYPT_ALPHABET,
    LIBARGON2,
    PREHASH_PASSWORD,
    PREHASHED,
    REFUSED_HASH_NAMES,
    REFUSED_HASHES,
    UNDECODABLE_ARGON2,
    argon2_of_total_length,
    argon2_verify,
    assert_not_leaked,
    bcrypt_verifies,
    bcrypt_with_ident,
    crypt_verifies,
    flip_char,
    given_secret,
    sha256_default_rounds,
    sha512_default_rounds,
    ssha_verifies,
)


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


def test_check_password_hash_max_length_accepted() -> None:
    value = argon2_of_total_length(HASH_MAX_LENGTH)
    assert len(value) == 150
    assert check_password_hash(value) == value


def test_check_password_hash_one_over_max_length_refused() -> None:
    value = argon2_of_total_length(HASH_MAX_LENGTH + 1)
    with pytest.raises(ValueError, match="longer than 150") as excinfo:
        check_password_hash(value)
    assert_not_leaked(str(excinfo.value), value.removeprefix("{ARGON2ID}"), hash_markers=False)


@pytest.mark.parametrize("name", REFUSED_HASH_NAMES)
def test_check_password_hash_unknown_or_malformed_refused(
    name: str,
) -> None:
    value = REFUSED_HASHES[name]
    with pytest.raises(ValueError) as excinfo:
        check_password_hash(value)
    secret = given_secret(value)
    if secret:
        assert_not_leaked(str(excinfo.value), secret, hash_markers=False)


def test_check_password_hash_long_ssha512_is_over_150() -> None:
    assert len(REFUSED_HASHES["ssha512-long-salt"]) > HASH_MAX_LENGTH


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
    return flip_char(bcrypt_with_ident(pw, "2y"), 28, BCRYPT_ALPHABET, 1)


def _noncanonical_bcrypt_checksum(pw: str) -> str:
    # Checksum: 31 characters for 23 bytes; the last one carries 2 unused bits.
    return flip_char(bcrypt_with_ident(pw, "2y"), 59, BCRYPT_ALPHABET, 1)


def _noncanonical_sha512_crypt(pw: str) -> str:
    # The last of 86 characters holds 2 bits: values 0-3 only.
    return flip_char(sha512_default_rounds(pw), -1, CRYPT_ALPHABET, 4)


def _noncanonical_sha256_crypt(pw: str) -> str:
    # The last of 43 characters holds 4 bits: values 0-15 only.
    return flip_char(sha256_default_rounds(pw), -1, CRYPT_ALPHABET, 16)


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
