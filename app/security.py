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
from collections.abc import Callable

from passlib.hash import bcrypt, sha256_crypt, sha512_crypt

PASSWORD_MAX_BYTES = 72  # bcrypt reads no more; Dovecot's C code stops at NUL
HASH_MAX_LENGTH = 150  # virtual_users.password varchar(150)


def check_password(password: str) -> str:
    """Refuse what bcrypt or Dovecot would silently truncate; return the password."""
    if not password:
        raise ValueError("must not be empty")
    if len(password.encode("utf-8")) > PASSWORD_MAX_BYTES:
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


def verify_password(password: str, stored: str) -> bool:
    scheme, _, digest = stored.partition("}")
    if scheme != "{BLF-CRYPT":
        raise ValueError("only {BLF-CRYPT} hashes can be verified here")
    return bool(bcrypt.verify(password, digest))


def _parses(handler: Callable[[str], object]) -> Callable[[str], bool]:
    def check(digest: str) -> bool:
        try:
            handler(digest)
        except (ValueError, TypeError):
            return False
        return True

    return check


def _salted_digest(digest_size: int) -> Callable[[str], bool]:
    def check(digest: str) -> bool:
        try:
            raw = base64.b64decode(digest, validate=True)
        except (binascii.Error, ValueError):
            return False
        return len(raw) > digest_size

    return check


_ARGON2 = re.compile(r"\$argon2(?:i|id)\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")

_bcrypt_digest = _parses(bcrypt.from_string)

# Scheme -> check of the part after the prefix. Weak schemes (PLAIN, MD5, CRYPT) are left out.
ACCEPTED_SCHEMES: dict[str, Callable[[str], bool]] = {
    "BLF-CRYPT": lambda d: d[:4] in ("$2a$", "$2b$", "$2y$") and _bcrypt_digest(d),
    "SHA512-CRYPT": lambda d: d.startswith("$6$") and _parses(sha512_crypt.from_string)(d),
    "SHA256-CRYPT": lambda d: d.startswith("$5$") and _parses(sha256_crypt.from_string)(d),
    "ARGON2I": lambda d: d.startswith("$argon2i$") and bool(_ARGON2.fullmatch(d)),
    "ARGON2ID": lambda d: d.startswith("$argon2id$") and bool(_ARGON2.fullmatch(d)),
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
