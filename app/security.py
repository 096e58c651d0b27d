"""Password hashing in the form Dovecot reads: ``{SCHEME}hash``.

New passwords become ``{BLF-CRYPT}$2y$<cost>$...`` (bcrypt through libpass, the
maintained passlib fork). Pre-hashed passwords, for migrations from other
servers, are accepted only in schemes Dovecot 2.3 verifies without plugins
and only when the hash parses in that scheme.
"""

import base64
import binascii
import re
import unicodedata
import warnings
from collections.abc import Callable
from typing import Any

from passlib.hash import bcrypt, sha256_crypt, sha512_crypt
from passlib.utils.binary import Base64Engine, bcrypt64, h64

PASSWORD_MAX_BYTES = 72  # bcrypt reads no more; Dovecot's C code stops at NUL
HASH_MAX_LENGTH = 150  # virtual_users.password varchar(150)


def check_password(password: str) -> str:
    """Refuse what bcrypt or Dovecot would silently truncate; return the password."""
    if not password:
        raise ValueError("must not be empty")
    try:
        encoded = password.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON "\\ud800"): not text; never say where it was.
        raise ValueError("must be valid Unicode text") from None
    if len(encoded) > PASSWORD_MAX_BYTES:
        raise ValueError(
            f"is longer than {PASSWORD_MAX_BYTES} bytes in UTF-8; bcrypt would ignore the rest"
        )
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise ValueError("must not contain control characters")
    return password


def hash_password(password: str, cost: int) -> str:
    """``{BLF-CRYPT}$2y$...``: the ident Dovecot 2.3 itself writes."""
    digest: str = bcrypt.using(rounds=cost, ident="2y").hash(check_password(password))
    return "{BLF-CRYPT}" + digest


def _parses(handler: Callable[[str], object]) -> Callable[[str], bool]:
    def check(digest: str) -> bool:
        try:
            with warnings.catch_warnings():
                # passlib only warns about what crypt(3) would silently re-encode.
                warnings.simplefilter("error")
                handler(digest)
        except (ValueError, TypeError, Warning):
            return False
        return True

    return check


def _no_unused_bits(engine: Base64Engine, text: str) -> bool:
    """No unused bits set in the last character: crypt(3) would re-encode it, and
    Dovecot's comparison with the stored string would then always fail."""
    repaired, _ = engine.check_repair_unused(text)
    return not repaired


def _bcrypt(digest: str) -> bool:
    if digest[:4] not in ("$2a$", "$2b$", "$2y$") or not _parses(bcrypt.from_string)(digest):
        return False
    salt_and_checksum = digest.rpartition("$")[2]
    return _no_unused_bits(bcrypt64, salt_and_checksum[:22]) and _no_unused_bits(
        bcrypt64, salt_and_checksum[22:]
    )


def _sha_crypt(prefix: str, handler: Any) -> Callable[[str], bool]:
    def check(digest: str) -> bool:
        return (
            digest.startswith(prefix)
            and _parses(handler.from_string)(digest)
            and _no_unused_bits(h64, digest.rpartition("$")[2])
        )

    return check


def _salted_digest(digest_size: int) -> Callable[[str], bool]:
    def check(digest: str) -> bool:
        try:
            raw = base64.b64decode(digest, validate=True)
        except (binascii.Error, ValueError):
            return False
        return len(raw) > digest_size

    return check


_ARGON2 = re.compile(
    r"\$(argon2(?:i|id))\$v=19\$m=(\d{1,10}),t=(\d{1,10}),p=(\d{1,8})"
    r"\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)"
)


def _unpadded_b64(text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    # Only the canonical encoding decodes in libargon2.
    return raw if base64.b64encode(raw).decode().rstrip("=") == text else None


def _argon2(variant: str) -> Callable[[str], bool]:
    """Parameters and lengths libargon2 accepts when it decodes the hash."""

    def check(digest: str) -> bool:
        match = _ARGON2.fullmatch(digest)
        if not match or match.group(1) != variant:
            return False
        memory, passes, lanes = (int(match.group(i)) for i in (2, 3, 4))
        salt, raw_hash = _unpadded_b64(match.group(5)), _unpadded_b64(match.group(6))
        return (
            1 <= lanes <= 0xFFFFFF
            and 1 <= passes <= 0xFFFFFFFF
            and 8 * lanes <= memory <= 0xFFFFFFFF
            and salt is not None
            and len(salt) >= 8
            and raw_hash is not None
            and len(raw_hash) >= 4
        )

    return check


# Scheme -> check of the part after the prefix. Weak schemes (PLAIN, MD5, CRYPT) are left out.
ACCEPTED_SCHEMES: dict[str, Callable[[str], bool]] = {
    "BLF-CRYPT": _bcrypt,
    "SHA512-CRYPT": _sha_crypt("$6$", sha512_crypt),
    "SHA256-CRYPT": _sha_crypt("$5$", sha256_crypt),
    "ARGON2I": _argon2("argon2i"),
    "ARGON2ID": _argon2("argon2id"),
    "SSHA512": _salted_digest(64),
    "SSHA256": _salted_digest(32),
}


def check_password_hash(value: str) -> str:
    """Accept ``{SCHEME}hash`` only for an allowed scheme whose hash parses."""
    match = re.fullmatch(r"\{([A-Z0-9-]+)\}(\S+)", value)
    if not match:
        raise ValueError("must be a Dovecot hash with a scheme prefix, such as {BLF-CRYPT}$2y$...")
    scheme, digest = match.groups()
    check = ACCEPTED_SCHEMES.get(scheme)
    if check is None:
        allowed = ", ".join(f"{{{s}}}" for s in ACCEPTED_SCHEMES)
        raise ValueError(f"uses a scheme that is not accepted; use one of {allowed}")
    if not check(digest):
        raise ValueError(f"is not a well-formed {{{scheme}}} hash")
    if len(value) > HASH_MAX_LENGTH:
        raise ValueError(f"is longer than {HASH_MAX_LENGTH} characters")
    return value
