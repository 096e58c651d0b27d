"""`mailprov check-config`: settings that are unsafe or contradict each other.

Each finding names the setting and says what is wrong, never its value (the
value may be a secret). Errors stop the service from starting when
``MAILPROV_ENVIRONMENT=production``; warnings are reported and let it start.
In development, both are only reported.

What cannot be unsafe is not a setting at all: TLS to the submission server is
mandatory and its certificate is always verified.
"""

import ipaddress
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.config import Settings

# Placeholders from our docs and passwords every scanner tries first.
KNOWN_PASSWORDS = frozenset(
    {"", "password", "passw0rd", "secret", "changeme", "change-me", "admin", "root", "test",
     "mailprov", "postfix", "dovecot", "mailserver", "123456", "12345678",
     "pw-migrate", "pw-rw", "pw-ro", "<pw1>", "<pw2>"}
)  # fmt: skip
MIN_SECRET_LENGTH = 12
MIN_BCRYPT_COST = 10
SUPERUSERS = frozenset({"root", "postgres"})


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    setting: str  # e.g. MAILPROV_BCRYPT_COST
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.setting}: {self.message}"


class UnsafeConfiguration(RuntimeError):
    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        lines = "\n".join(f"  {finding}" for finding in findings)
        super().__init__(
            "refusing to start in production with unsafe settings "
            f"(see `mailprov check-config`):\n{lines}"
        )


def _weak(secret: str) -> str | None:
    if secret.lower() in KNOWN_PASSWORDS:
        return "is a default or placeholder password"
    if len(secret) < MIN_SECRET_LENGTH:
        return f"is shorter than {MIN_SECRET_LENGTH} characters"
    return None


def _database(settings: Settings) -> list[Finding]:
    name = "MAILPROV_DATABASE_URL"
    try:
        url = make_url(settings.DATABASE_URL)
    except ArgumentError:
        return [Finding("error", name, "is not a database URL")]
    backend = url.get_backend_name()
    if backend not in {"sqlite", "mysql", "mariadb", "postgresql"}:
        return [Finding("error", name, f"{backend} is not supported (SQLite, MariaDB, PostgreSQL)")]
    found: list[Finding] = []
    production = settings.ENVIRONMENT == "production"
    if backend == "sqlite":
        database = url.database or ""
        if not production:
            return found
        if database in {"", ":memory:"} or "mode=memory" in str(url.query):
            found.append(Finding("error", name, "an in-memory database loses everything on exit"))
        elif not Path(database).is_absolute():
            found.append(
                Finding(
                    "warning",
                    name,
                    "a relative SQLite path depends on the "
                    "directory the service starts in; give an absolute one",
                )
            )
        found.append(
            Finding(
                "warning",
                name,
                "SQLite suits one host; MariaDB or PostgreSQL are the production backends",
            )
        )
        return found
    if url.username in SUPERUSERS:
        found.append(
            Finding(
                "warning",
                name,
                f"connects as the superuser {url.username}; use the grants in docs/databases.md",
            )
        )
    if url.password is not None and (reason := _weak(str(url.password))):
        found.append(Finding("error", name, f"the password {reason}"))
    host = url.host or "localhost"
    if url.password is None and not _loopback(host):
        found.append(Finding("warning", name, "no password for a database on another host"))
    return found


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _submission(settings: Settings) -> list[Finding]:
    found = []
    user, password = settings.SUBMISSION_USERNAME, settings.SUBMISSION_PASSWORD
    if bool(user) != (password is not None):
        missing = "MAILPROV_SUBMISSION_PASSWORD" if user else "MAILPROV_SUBMISSION_USERNAME"
        found.append(
            Finding(
                "error",
                missing,
                "the service's submission account needs both "
                "MAILPROV_SUBMISSION_USERNAME and MAILPROV_SUBMISSION_PASSWORD",
            )
        )
    if password is not None and (reason := _weak(password.get_secret_value())):
        found.append(Finding("error", "MAILPROV_SUBMISSION_PASSWORD", reason))
    port, mode = settings.SUBMISSION_PORT, settings.SUBMISSION_TLS
    if (port, mode) in {(587, "implicit"), (465, "starttls")}:
        want = "starttls" if port == 587 else "implicit"
        found.append(Finding("error", "MAILPROV_SUBMISSION_TLS", f"port {port} speaks {want} TLS"))
    if port == 25:
        found.append(
            Finding(
                "warning",
                "MAILPROV_SUBMISSION_PORT",
                "25 is for relaying between servers; submission is 587 (or 465)",
            )
        )
    if settings.SUBMISSION_CA_FILE is not None:
        try:
            ssl.create_default_context(cafile=settings.SUBMISSION_CA_FILE)
        except (OSError, ssl.SSLError):
            found.append(
                Finding(
                    "error",
                    "MAILPROV_SUBMISSION_CA_FILE",
                    "cannot be read as a PEM bundle of CA certificates",
                )
            )
    if settings.SUBMISSION_TIMEOUT < settings.SUBMISSION_CONNECT_TIMEOUT:
        found.append(
            Finding(
                "error",
                "MAILPROV_SUBMISSION_TIMEOUT",
                "is shorter than MAILPROV_SUBMISSION_CONNECT_TIMEOUT",
            )
        )
    return found


def _limits(settings: Settings) -> list[Finding]:
    found = []
    production = settings.ENVIRONMENT == "production"
    if settings.BCRYPT_COST < MIN_BCRYPT_COST:
        found.append(
            Finding(
                "error",
                "MAILPROV_BCRYPT_COST",
                f"below {MIN_BCRYPT_COST} is fast to crack; 12 is the default",
            )
        )
    if settings.PAGE_SIZE_DEFAULT > settings.PAGE_SIZE_MAX:
        found.append(
            Finding("error", "MAILPROV_PAGE_SIZE_DEFAULT", "is larger than MAILPROV_PAGE_SIZE_MAX")
        )
    # A message of SEND_MAX_BYTES arrives base64-encoded (4/3) inside a JSON body.
    if settings.SEND_MAX_BYTES * 4 // 3 + 64 * 1024 > settings.MAX_BODY_BYTES:
        found.append(
            Finding(
                "warning",
                "MAILPROV_MAX_BODY_BYTES",
                "a message of MAILPROV_SEND_MAX_BYTES cannot arrive within it (base64 in JSON)",
            )
        )
    if not Path(settings.MAILDIR_ROOT).is_absolute():
        found.append(Finding("error", "MAILPROV_MAILDIR_ROOT", "must be an absolute path"))
    if production and settings.SEND_RATE_LIMIT == 0:
        found.append(
            Finding("warning", "MAILPROV_SEND_RATE_LIMIT", "is 0: any key can send without limit")
        )
    if production and settings.METRICS == "open":
        found.append(
            Finding(
                "warning",
                "MAILPROV_METRICS",
                "open: /metrics needs no key; keep the port behind a proxy or a private network",
            )
        )
    if production and settings.AUTH_FAILURE_LIMIT > 1000:
        found.append(
            Finding(
                "warning", "MAILPROV_AUTH_FAILURE_LIMIT", "above 1000 barely slows down guessing"
            )
        )
    return found


MIN_DKIM_SECRET_LENGTH = 32


def _dkim_and_dns(settings: Settings) -> list[Finding]:
    found = []
    production = settings.ENVIRONMENT == "production"
    for name, secret in (
        ("MAILPROV_DKIM_KEY_SECRET", settings.DKIM_KEY_SECRET),
        ("MAILPROV_DKIM_KEY_SECRET_PREVIOUS", settings.DKIM_KEY_SECRET_PREVIOUS),
    ):
        if secret is None:
            continue
        value = secret.get_secret_value()
        if value.lower() in KNOWN_PASSWORDS or len(value) < MIN_DKIM_SECRET_LENGTH:
            found.append(
                Finding(
                    "error",
                    name,
                    f"must be at least {MIN_DKIM_SECRET_LENGTH} random characters "
                    "(openssl rand -base64 32)",
                )
            )
    if settings.DKIM_KEY_SECRET_PREVIOUS is not None and settings.DKIM_KEY_SECRET is None:
        found.append(
            Finding(
                "error",
                "MAILPROV_DKIM_KEY_SECRET_PREVIOUS",
                "is set without MAILPROV_DKIM_KEY_SECRET",
            )
        )
    if production and settings.DKIM_KEY_SECRET is None:
        found.append(
            Finding(
                "warning",
                "MAILPROV_DKIM_KEY_SECRET",
                "is not set: DKIM private keys are stored in clear, a database dump discloses them",
            )
        )
    if not settings.DNS_SPF.lower().startswith("v=spf1"):
        found.append(Finding("error", "MAILPROV_DNS_SPF", "must start with v=spf1"))
    if not settings.DNS_DMARC.startswith("v=DMARC1"):
        found.append(Finding("error", "MAILPROV_DNS_DMARC", "must start with v=DMARC1"))
    rua = settings.DNS_TLSRPT_RUA
    if rua is not None and not rua.startswith(("mailto:", "https:")):
        found.append(Finding("error", "MAILPROV_DNS_TLSRPT_RUA", "must be a mailto: or https: URI"))
    from app.records import mx_host

    host = mx_host(settings)
    if production and ("." not in host or host in {"localhost", "localhost.localdomain"}):
        found.append(
            Finding(
                "warning",
                "MAILPROV_DNS_MX_HOST",
                f"the MX host would be {host!r}, not a name other servers can find; set it",
            )
        )
    elif production and settings.DNS_MX_HOST is None:
        found.append(
            Finding(
                "warning",
                "MAILPROV_DNS_MX_HOST",
                "is not set: the records name this machine's FQDN; set the public host name",
            )
        )
    return found


def _env_file() -> list[Finding]:
    path = Path(".env")
    try:
        mode = path.stat().st_mode
    except OSError:
        return []
    if mode & (stat.S_IRGRP | stat.S_IROTH) and "MAILPROV_" in path.read_text(errors="replace"):
        where = os.path.abspath(path)
        return [Finding("warning", ".env", f"{where} is readable by other users; chmod 600")]
    return []


def check(settings: Settings) -> list[Finding]:
    """Every finding, errors first."""
    found = [
        *_database(settings),
        *_submission(settings),
        *_limits(settings),
        *_dkim_and_dns(settings),
        *_env_file(),
    ]
    return sorted(found, key=lambda finding: finding.level != "error")


def refuse_unsafe(settings: Settings) -> list[Finding]:
    """Raise UnsafeConfiguration in production when there are errors; else the findings."""
    found = check(settings)
    if settings.ENVIRONMENT == "production" and any(f.level == "error" for f in found):
        raise UnsafeConfiguration([f for f in found if f.level == "error"])
    return found
