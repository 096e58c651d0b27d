"""Canonical forms of domain names and addresses.

Postfix and Dovecot compare strings exactly, while MariaDB compares them
case-insensitively: everything is stored in one canonical form (lower case,
internationalised domains as IDNA A-labels) so every backend answers the
lookups alike. Errors never echo more than the offending part's kind.
"""

import re
import unicodedata

import idna

DOMAIN_MAX_BYTES = 50  # virtual_domains.name varchar(50)
ADDRESS_MAX_BYTES = 100  # virtual_users.email, virtual_aliases.source/destination varchar(100)
LOCAL_PART_MAX_BYTES = 64  # RFC 5321

# RFC 5322 dot-atom text without "/", "|", "%" and "!": "/" would reach into the
# maildir path (/var/vmail/%d/%n); "|", "%" and "!" carry routing meaning in Postfix.
_ATOM = r"[a-z0-9#$&'*+=?^_`{}~-]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_domain(value: str, max_bytes: int = DOMAIN_MAX_BYTES) -> str:
    """Return the canonical A-label form of a domain name, or raise ValueError."""
    if not value or value != value.strip() or value.endswith("."):
        raise ValueError("must be a domain name such as example.org, without spaces or a final dot")
    try:
        encoded = idna.encode(value, uts46=True, std3_rules=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise ValueError("is not a valid domain name") from None
    labels = encoded.split(".")
    if len(labels) < 2:
        raise ValueError("must have at least two labels, such as example.org")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("is not a valid domain name")
    if labels[-1].isdigit():
        raise ValueError("must be a domain name, not an IP address")
    if len(encoded) > max_bytes:
        raise ValueError(f"is longer than {max_bytes} bytes in its IDNA form")
    return encoded


def unicode_domain(name: str) -> str:
    """The human-readable (U-label) form of a canonical domain name."""
    try:
        return idna.decode(name)
    except (idna.IDNAError, UnicodeError):
        return name


def split_address(value: str) -> tuple[str, str]:
    local, sep, domain = value.rpartition("@")
    if not sep or not local:
        raise ValueError("must be an address such as user@example.org")
    return local, domain


def normalize_local_part(local: str) -> str:
    if not local.isascii():
        raise ValueError("must have an ASCII local part (the part before @)")
    local = local.lower()
    if len(local) > LOCAL_PART_MAX_BYTES:
        raise ValueError(f"has a local part longer than {LOCAL_PART_MAX_BYTES} bytes")
    if not _LOCAL_PART.fullmatch(local):
        raise ValueError(
            "has an invalid local part: use letters, digits and . # $ & ' * + = ? ^ _ ` { } ~ -,"
            " with no leading, trailing or double dot"
        )
    return local


def _fit(address: str) -> str:
    if len(address) > ADDRESS_MAX_BYTES:
        raise ValueError(f"is longer than {ADDRESS_MAX_BYTES} bytes")
    return address


def normalize_address(value: str) -> str:
    """Return ``local@domain`` in canonical form, or raise ValueError."""
    local, domain = split_address(value)
    return _fit(f"{normalize_local_part(local)}@{normalize_domain(domain)}")


def normalize_alias_source(value: str) -> str:
    """An address, or ``@domain`` for a catch-all."""
    if value.startswith("@"):
        return _fit("@" + normalize_domain(value[1:]))
    return normalize_address(value)


# RFC 6531: the local part of a mail address may be UTF-8 when both ends speak SMTPUTF8.
_UTF8_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_UTF8_LOCAL_PART = re.compile(rf"{_UTF8_ATOM}(?:\.{_UTF8_ATOM})*")


def normalize_mail_address(value: str) -> str:
    """Any deliverable address, for sending: the local part is kept as written (it may
    be case-sensitive, and may be UTF-8); the domain becomes its A-label form."""
    local, domain = split_address(value)
    if not _UTF8_LOCAL_PART.fullmatch(local) or any(
        unicodedata.category(ch).startswith(("C", "Z")) for ch in local
    ):
        raise ValueError("has an invalid local part (the part before @)")
    if len(local.encode("utf-8")) > LOCAL_PART_MAX_BYTES:
        raise ValueError(f"has a local part longer than {LOCAL_PART_MAX_BYTES} bytes")
    return f"{local}@{normalize_domain(domain, max_bytes=253)}"


def domain_of(address: str) -> str:
    """The domain part of a canonical address or ``@domain`` source."""
    return address.rpartition("@")[2]


def local_part_of(address: str) -> str:
    return address.rpartition("@")[0]
