"""Settings, read once from the environment (prefix ``MAILPROV_``)."""

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILPROV_", env_file=".env", extra="ignore")

    # production: `mailprov check-config` errors stop the service from starting.
    ENVIRONMENT: Literal["development", "production"] = "development"
    # Log lines as JSON objects (one per line) or as readable text; both carry request ids.
    LOG_FORMAT: Literal["text", "json"] = "text"
    # GET /metrics (Prometheus): "key" needs an admin key (a read-only one is enough),
    # "open" needs none (only behind a proxy or on a private network), "off" is 404.
    METRICS: Literal["key", "open", "off"] = "key"
    # SQLite file next to where the service runs: nothing to install.
    DATABASE_URL: str = "sqlite:///./mailprov.db"
    # Seconds a new database connection may take before the request fails with 503.
    DATABASE_CONNECT_TIMEOUT: int = Field(default=5, ge=1, le=60)
    DATABASE_POOL_SIZE: int = Field(default=5, ge=1, le=100)
    # Seconds a MariaDB read or write may wait for the server (PostgreSQL: TCP keepalive).
    DATABASE_READ_TIMEOUT: int = Field(default=30, ge=1, le=3600)
    # bcrypt cost for {BLF-CRYPT}; doveadm's default of 5 is too weak for today.
    BCRYPT_COST: int = Field(default=12, ge=4, le=31)
    # Where Dovecot keeps maildirs (the guide's user_query: '/var/vmail/%d/%n').
    MAILDIR_ROOT: str = "/var/vmail"
    # Failed keys from one client address within the window before it is answered 429.
    AUTH_FAILURE_LIMIT: int = Field(default=20, ge=1, le=100000)
    AUTH_FAILURE_WINDOW: int = Field(default=60, ge=1, le=86400)
    AUTH_BLOCK_SECONDS: int = Field(default=60, ge=1, le=86400)
    AUDIT_RETENTION_DAYS: int = Field(default=365, ge=1, le=36500)
    # Request bodies above this are refused (413) before they are read: room for a
    # SEND_MAX_BYTES message whose attachments arrive base64-encoded in JSON.
    MAX_BODY_BYTES: int = Field(default=16 * 1024 * 1024, ge=1024)
    # The submission service /send relays through (Postfix's 587 with STARTTLS, or 465).
    SUBMISSION_HOST: str = "127.0.0.1"
    SUBMISSION_PORT: int = Field(default=587, ge=1, le=65535)
    SUBMISSION_TLS: Literal["starttls", "implicit"] = "starttls"
    # A private CA's bundle; certificates are always verified.
    SUBMISSION_CA_FILE: str | None = None
    # The service's own account, used when a request carries no credentials.
    SUBMISSION_USERNAME: str | None = None
    SUBMISSION_PASSWORD: SecretStr | None = None
    SUBMISSION_CONNECT_TIMEOUT: float = Field(default=10, gt=0, le=300)
    SUBMISSION_TIMEOUT: float = Field(default=60, gt=0, le=3600)
    SEND_MAX_RECIPIENTS: int = Field(default=50, ge=1, le=10000)
    # Postfix's default message_size_limit.
    SEND_MAX_BYTES: int = Field(default=10_240_000, ge=1024)
    # Messages one key may send per SEND_RATE_WINDOW seconds, shared by every running
    # copy (in the database); bursts up to the limit. 0 turns the limit off.
    SEND_RATE_LIMIT: int = Field(default=120, ge=0, le=1_000_000)
    SEND_RATE_WINDOW: int = Field(default=60, ge=1, le=86400)
    IDEMPOTENCY_HOURS: int = Field(default=24, ge=1, le=720)
    PAGE_SIZE_DEFAULT: int = Field(default=50, ge=1, le=1000)
    PAGE_SIZE_MAX: int = Field(default=500, ge=1, le=10000)

    # DKIM (app.dkim). With a secret, private keys are stored AES-256-GCM encrypted, so a
    # database dump alone does not disclose them; `mailprov dkim sync` needs the same
    # secret on the mail host. PREVIOUS still decrypts while `mailprov dkim reencrypt`
    # moves every key to the new secret.
    DKIM_KEY_SECRET: SecretStr | None = None
    DKIM_KEY_SECRET_PREVIOUS: SecretStr | None = None
    DKIM_ALGORITHM: Literal["rsa", "ed25519"] = "rsa"
    DKIM_RSA_BITS: Literal[2048, 3072, 4096] = 2048

    # The records GET /domains/{name}/dns prints (app.records). "{domain}" in a policy
    # is replaced by the domain's name. MX host: the machine's FQDN when not given.
    DNS_MX_HOST: str | None = None
    DNS_MX_PRIORITY: int = Field(default=10, ge=0, le=65535)
    DNS_SPF: str = "v=spf1 mx -all"
    DNS_DMARC: str = "v=DMARC1; p=quarantine"
    DNS_TTL: int = Field(default=3600, ge=60, le=604800)
    # autoconfig/autodiscover CNAMEs and RFC 6186/8314 SRV records for mail clients.
    DNS_CLIENT_RECORDS: bool = True
    # MTA-STS: off, or the policy mode to announce (the policy file is printed too).
    DNS_MTA_STS: Literal["off", "testing", "enforce"] = "off"
    DNS_MTA_STS_MAX_AGE: int = Field(default=604800, ge=86400, le=31557600)
    # TLS reporting (RFC 8460) address, e.g. mailto:tlsrpt@example.org; none: no record.
    DNS_TLSRPT_RUA: str | None = None
    # GET /domains/{name}/dns/check asks these (ip or ip:port, [v6]:port; comma-separated);
    # none: the system's resolvers (/etc/resolv.conf).
    DNS_RESOLVERS: Annotated[list[str], NoDecode] = []
    # Seconds one record's lookup may take, retries included.
    DNS_TIMEOUT: float = Field(default=3.0, gt=0, le=30)

    @field_validator("DNS_RESOLVERS", mode="before")
    @classmethod
    def _split_resolvers(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part]
        return value

    @field_validator("DNS_RESOLVERS")
    @classmethod
    def _check_resolvers(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_resolver(entry)
        return value

    @field_validator("DNS_MX_HOST")
    @classmethod
    def _check_host(cls, value: str | None) -> str | None:
        if value is not None:
            from app.addresses import normalize_domain

            normalize_domain(value.strip().rstrip("."), max_bytes=253)
        return value

    @field_validator("DNS_SPF", "DNS_DMARC", "DNS_TLSRPT_RUA")
    @classmethod
    def _check_policy(cls, value: str | None) -> str | None:
        # Printed into zone files and TXT records: printable ASCII without quotes.
        if value is not None and (
            not value.isascii() or not value.isprintable() or any(c in value for c in '"\\')
        ):
            raise ValueError("must be printable ASCII without quotes or backslashes")
        return value


def parse_resolver(entry: str) -> tuple[str, int]:
    """``ip``, ``ip:port`` or ``[ipv6]:port`` -> (ip, port); port 53 by default."""
    host, port = entry, "53"
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{entry!r} is not ip, ip:port or [ipv6]:port")
            port = rest[1:]
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(f"{entry!r} is not ip, ip:port or [ipv6]:port") from None
    if not 0 < number < 65536:
        raise ValueError(f"{entry!r}: the port must be 1-65535")
    return str(address), number
