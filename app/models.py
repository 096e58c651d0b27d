"""The API's request and response models (the tables are in ``app.tables``).

The API names things for people: a mailbox has an ``address`` (column
``email``); ids never leave the service. No ``*Public`` model has a password
or hash field.
"""

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from app.addresses import normalize_address, normalize_alias_source, normalize_domain
from app.security import check_password, check_password_hash

QUOTA_MAX = 2**63 - 1  # bigint
RAW_MAX = 320  # longest input looked at before normalising


class Input(BaseModel):
    """A request body: unknown fields are refused. Subclasses' ``model_config`` adds to
    this one (pydantic merges a class's config with its bases')."""

    model_config = ConfigDict(extra="forbid")


def example(*examples: dict[str, Any]) -> ConfigDict:
    """Examples shown in the OpenAPI document (and sent by schemathesis)."""
    return ConfigDict(json_schema_extra={"examples": list(examples)})


DomainName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=RAW_MAX,
        description="Domain name; lower-cased and stored in IDNA A-label form (at most 50 bytes).",
        examples=["example.org"],
    ),
]
Address = Annotated[
    str,
    Field(
        min_length=3,
        max_length=RAW_MAX,
        description="Email address; lower-cased, domain in IDNA A-label form, at most 100 bytes.",
        examples=["john@example.org"],
    ),
]
Quota = Annotated[
    int,
    Field(
        ge=0,
        le=QUOTA_MAX,
        strict=True,
        description="Mailbox quota in bytes; 0 means unlimited.",
        examples=[1073741824],
    ),
]
Password = Annotated[
    SecretStr,
    Field(
        description="Plain password: 1 to 72 UTF-8 bytes, no control characters. "
        "Stored as a {BLF-CRYPT} bcrypt hash; never returned.",
        examples=["summersun"],
    ),
]
PasswordHash = Annotated[
    SecretStr,
    Field(
        description="A pre-hashed password with a Dovecot scheme prefix, for migrations: "
        "{BLF-CRYPT}, {SHA512-CRYPT}, {SHA256-CRYPT}, {ARGON2I}, {ARGON2ID}, {SSHA512}, {SSHA256}.",
        examples=["{BLF-CRYPT}$2y$12$0v0cX2bXoKpTQrU7m9T8UeJmCk1mN7m1I1d6oQp0Xz5r3o2x4m5Ka"],
    ),
]


def _check_secret_password(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        check_password(value.get_secret_value())
    return value


def _check_secret_hash(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        check_password_hash(value.get_secret_value())
    return value


class DomainCreate(Input):
    model_config = example({"name": "example.org"})

    name: DomainName

    _normalize = field_validator("name")(normalize_domain)


class DomainPublic(BaseModel):
    model_config = example({"name": "xn--bcher-kva.de", "name_unicode": "bücher.de"})

    name: str = Field(description="Canonical (A-label) name, as Postfix looks it up.")
    name_unicode: str = Field(description="Human-readable (U-label) form of the name.")


class DomainDetail(DomainPublic):
    model_config = example(
        {"name": "example.org", "name_unicode": "example.org", "mailboxes": 12, "aliases": 3,
         "maildir_root": "/var/vmail/example.org"}
    )  # fmt: skip

    mailboxes: int = Field(description="Number of mailboxes in the domain.")
    aliases: int = Field(description="Number of aliases (distinct sources) in the domain.")
    maildir_root: str = Field(description="Where Dovecot keeps this domain's maildirs.")


class DomainDeleted(BaseModel):
    model_config = example(
        {"name": "example.org", "mailboxes_removed": 12, "aliases_removed": 3,
         "alias_destinations_removed": [{"source": "sales@example.net",
                                         "destination": "john@example.org"}],
         "maildirs_kept": "/var/vmail/example.org"}
    )  # fmt: skip

    name: str
    mailboxes_removed: int
    aliases_removed: int
    alias_destinations_removed: list["AliasDestination"] = Field(
        description="Destinations removed from aliases of other domains that pointed here."
    )
    maildirs_kept: str = Field(
        description="Maildirs are not deleted: this directory stays on disk until removed by hand."
    )


class MailboxCreate(Input):
    model_config = example(
        {"address": "john@example.org", "password": "summersun", "quota": 1073741824},
        {"address": "jane@example.org",
         "password_hash": "{SHA512-CRYPT}$6$q7Jx0ZbR4tLm2Wc9$ljA2VKDN3QdIbfm3Y2Vg9LPd2E.Mzgv"
                          "5Nq01bQ5Ky/JprKdpwPsXuxkgJE3YMLJeirVrzG7VAZHGwqgg2ArX91"},
    )  # fmt: skip

    address: Address
    password: Password | None = None
    password_hash: PasswordHash | None = None
    quota: Quota = 0

    _normalize = field_validator("address")(normalize_address)
    _check_password = field_validator("password")(_check_secret_password)
    _check_hash = field_validator("password_hash")(_check_secret_hash)

    @model_validator(mode="after")
    def _one_secret(self) -> Self:
        if (self.password is None) == (self.password_hash is None):
            raise ValueError("give exactly one of password and password_hash")
        return self


class MailboxUpdate(Input):
    model_config = example({"password": "wintermoon"}, {"quota": 2147483648})

    password: Password | None = None
    password_hash: PasswordHash | None = None
    quota: Quota | None = None

    _check_password = field_validator("password")(_check_secret_password)
    _check_hash = field_validator("password_hash")(_check_secret_hash)

    @model_validator(mode="after")
    def _at_most_one_secret_and_a_change(self) -> Self:
        if self.password is not None and self.password_hash is not None:
            raise ValueError("give at most one of password and password_hash")
        if self.password is None and self.password_hash is None and self.quota is None:
            raise ValueError("give password, password_hash or quota")
        return self


class MailboxPublic(BaseModel):
    model_config = example(
        {"address": "john@example.org", "domain": "example.org", "quota": 1073741824,
         "maildir": "/var/vmail/example.org/john"}
    )  # fmt: skip

    address: str
    domain: str
    quota: int = Field(description="Quota in bytes; 0 means unlimited.")
    maildir: str = Field(description="Where Dovecot keeps this mailbox's mail.")


class AliasDestination(BaseModel):
    source: str
    destination: str


class MailboxDeleted(BaseModel):
    model_config = example(
        {"address": "john@example.org", "maildir_kept": "/var/vmail/example.org/john",
         "alias_destinations_removed": [{"source": "info@example.org",
                                         "destination": "john@example.org"}]}
    )  # fmt: skip

    address: str
    maildir_kept: str = Field(
        description="The maildir is not deleted: it stays on disk until removed by hand."
    )
    alias_destinations_removed: list[AliasDestination] = Field(
        description="With cascade: alias destinations that pointed at this mailbox, "
        "and at aliases that vanished because of it."
    )


Destinations = Annotated[
    list[Annotated[str, Field(max_length=RAW_MAX), AfterValidator(normalize_address)]],
    Field(
        min_length=1,
        max_length=1000,
        description="Where mail goes: addresses, local or external. Local ones must exist.",
        examples=[["john@example.org", "john.doe@example.net"]],
    ),
]


def _normalize_destinations(values: list[str]) -> list[str]:
    # Duplicates (after normalising each) collapse: one row per distinct destination.
    return list(dict.fromkeys(values))


class AliasCreate(Input):
    model_config = example(
        {"source": "info@example.org", "destinations": ["john@example.org", "boss@example.net"]},
        {"source": "@example.org", "destinations": ["john@example.org"]},
    )

    source: Address = Field(
        description="Address, or @domain for a catch-all; lower-cased, at most 100 bytes.",
        examples=["info@example.org", "@example.org"],
    )
    destinations: Destinations

    _normalize = field_validator("source")(normalize_alias_source)
    _normalize_destinations = field_validator("destinations")(_normalize_destinations)


class AliasUpdate(Input):
    model_config = example({"destinations": ["john@example.org", "lisa@example.org"]})

    destinations: Destinations

    _normalize_destinations = field_validator("destinations")(_normalize_destinations)


class DestinationAdd(Input):
    model_config = example({"destination": "lisa@example.org"})

    destination: Address

    _normalize = field_validator("destination")(normalize_address)


class AliasPublic(BaseModel):
    model_config = example(
        {"source": "info@example.org", "domain": "example.org", "catch_all": False,
         "destinations": ["boss@example.net", "john@example.org"]}
    )  # fmt: skip

    source: str
    domain: str
    catch_all: bool = Field(description="True for an @domain source.")
    destinations: list[str] = Field(description="Sorted destinations, one row each in the table.")


class AliasDeleted(BaseModel):
    model_config = example(
        {"source": "info@example.org", "destinations_removed": ["john@example.org"],
         "alias_destinations_removed": []}
    )  # fmt: skip

    source: str
    destinations_removed: list[str]
    alias_destinations_removed: list[AliasDestination] = Field(
        description="With cascade: destinations of other aliases that pointed at this one."
    )


class Page(BaseModel):
    total: int | None = Field(
        description="Number of items matching the filters, on all pages; null when the "
        "request said `total=false`."
    )
    limit: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


class DomainsPage(Page):
    model_config = example(
        {"total": 1, "limit": 50, "next_cursor": None,
         "items": [{"name": "example.org", "name_unicode": "example.org"}]}
    )  # fmt: skip

    items: list[DomainPublic]


class MailboxesPage(Page):
    model_config = example(
        {"total": 1, "limit": 50, "next_cursor": None,
         "items": [{"address": "john@example.org", "domain": "example.org", "quota": 0,
                    "maildir": "/var/vmail/example.org/john"}]}
    )  # fmt: skip

    items: list[MailboxPublic]


class AliasesPage(Page):
    model_config = example(
        {"total": 1, "limit": 50, "next_cursor": None,
         "items": [{"source": "@example.org", "domain": "example.org", "catch_all": True,
                    "destinations": ["john@example.org"]}]}
    )  # fmt: skip

    items: list[AliasPublic]


# ---------------------------------------------------------------- DKIM and DNS

DkimAlgorithm = Literal["rsa", "ed25519"]
DkimState = Literal["pending", "active", "retired"]
Selector = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
        description="One DNS label: letters, digits and inner hyphens; lower-cased.",
        examples=["mp20261201-3fa9"],
    ),
]


class DkimKeyCreate(Input):
    model_config = ConfigDict(
        extra="forbid",
        **example({}, {"algorithm": "ed25519"}, {"algorithm": "rsa", "bits": 3072,
                                                  "selector": "s2026"}, {"activate": True}),
    )  # fmt: skip

    algorithm: DkimAlgorithm | None = Field(
        default=None, description="`rsa` or `ed25519`; default MAILPROV_DKIM_ALGORITHM (rsa)."
    )
    bits: Literal[2048, 3072, 4096] | None = Field(
        default=None, description="RSA key size; default MAILPROV_DKIM_RSA_BITS (2048)."
    )
    selector: Selector | None = Field(
        default=None, description="Default: `mp` + today's date + 4 random hex digits."
    )
    activate: bool = Field(
        default=False,
        description="Rotate now: the new key signs at once and the active one is retired "
        "(still published). Default: the domain's first key signs, later ones wait `pending`.",
    )

    @field_validator("selector")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return None if value is None else value.lower()

    @model_validator(mode="after")
    def _bits_for_rsa(self) -> Self:
        if self.bits is not None and self.algorithm == "ed25519":
            raise ValueError("bits applies to rsa keys only")
        return self


class DkimKeyUpdate(Input):
    model_config = ConfigDict(extra="forbid", **example({"state": "active"}))

    state: Literal["active"] = Field(
        description="`active`: sign with this key from now on (the active one is retired)."
    )


class DkimKeyPublic(BaseModel):
    model_config = example(
        {"domain": "example.org", "selector": "mp20261201-3fa9", "algorithm": "rsa",
         "bits": 2048, "state": "active", "created_at": "2026-12-01T10:00:00Z",
         "activated_at": "2026-12-01T10:00:00Z", "retired_at": None,
         "record_name": "mp20261201-3fa9._domainkey.example.org.",
         "record_value": "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA..."}
    )  # fmt: skip

    domain: str
    selector: str
    algorithm: DkimAlgorithm
    bits: int
    state: DkimState = Field(
        description="`pending`: published, not signing yet; `active`: signs new mail; "
        "`retired`: no longer signs, still published so mail signed with it verifies."
    )
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    record_name: str = Field(description="Where the TXT record goes (absolute name).")
    record_value: str = Field(description="The TXT record's text (the public key).")


class DkimKeys(BaseModel):
    model_config = example(
        {"domain": "example.org", "items": [
            {"domain": "example.org", "selector": "mp20261201-3fa9", "algorithm": "ed25519",
             "bits": 256, "state": "active", "created_at": "2026-12-01T10:00:00Z",
             "activated_at": "2026-12-01T10:00:00Z", "retired_at": None,
             "record_name": "mp20261201-3fa9._domainkey.example.org.",
             "record_value": "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}]}
    )  # fmt: skip

    domain: str
    items: list[DkimKeyPublic] = Field(description="Newest first.")


class DkimKeyDeleted(BaseModel):
    model_config = example(
        {"domain": "example.org", "selector": "mp20261101-77c0",
         "record_name": "mp20261101-77c0._domainkey.example.org."}
    )  # fmt: skip

    domain: str
    selector: str
    record_name: str = Field(description="Remove this TXT record from the zone.")


class DnsRecord(BaseModel):
    purpose: str = Field(
        description="mx, spf, dmarc, dkim, autoconfig, autodiscover, srv-imaps, "
        "srv-submissions, srv-submission, srv-autodiscover, mta-sts, mta-sts-policy, tlsrpt."
    )
    name: str = Field(description="Absolute owner name, with the trailing dot.")
    type: Literal["MX", "TXT", "CNAME", "SRV"]
    ttl: int
    value: str = Field(
        description="Record data in zone-file form; a TXT record's text unquoted and whole "
        "(split into 255-byte strings only in `zone`)."
    )
    zone: str = Field(description="The record as one zone-file line.")
    selector: str | None = Field(default=None, description="DKIM records: the selector.")
    state: DkimState | None = Field(default=None, description="DKIM records: the key's state.")


class DnsRecords(BaseModel):
    model_config = example(
        {"domain": "example.org", "records": [
            {"purpose": "mx", "name": "example.org.", "type": "MX", "ttl": 3600,
             "value": "10 mail.example.net.",
             "zone": "example.org. 3600 IN MX 10 mail.example.net."},
            {"purpose": "spf", "name": "example.org.", "type": "TXT", "ttl": 3600,
             "value": "v=spf1 mx -all", "zone": 'example.org. 3600 IN TXT "v=spf1 mx -all"'}],
         "mta_sts_policy": None}
    )  # fmt: skip

    domain: str
    records: list[DnsRecord]
    mta_sts_policy: str | None = Field(
        description="With MTA-STS on: the file to serve at "
        "https://mta-sts.<domain>/.well-known/mta-sts.txt."
    )


CheckResult = Literal["ok", "missing", "different", "error"]


class DnsRecordCheck(DnsRecord):
    result: CheckResult = Field(
        description="`ok`; `missing` (no such record); `different` (`found` says what is "
        "there instead); `error` (could not be resolved: `reason` says why)."
    )
    found: list[str] = Field(description="What the resolver answered for this name and type.")
    reason: str | None = Field(default=None, description="Why the result is not `ok`.")


class DnsCheck(BaseModel):
    model_config = example(
        {"domain": "example.org", "status": "problems", "resolvers": ["127.0.0.1:53"],
         "records": [
             {"purpose": "spf", "name": "example.org.", "type": "TXT", "ttl": 3600,
              "value": "v=spf1 mx -all", "zone": 'example.org. 3600 IN TXT "v=spf1 mx -all"',
              "result": "different", "found": ["v=spf1 a -all"],
              "reason": "the SPF record differs"}]}
    )  # fmt: skip

    domain: str
    status: Literal["ok", "problems", "unknown"] = Field(
        description="`ok`: every record is there; `problems`: some are missing or different; "
        "`unknown`: none is wrong but some could not be resolved (resolver down, timeout)."
    )
    resolvers: list[str] = Field(description="The resolvers asked (`system`: resolv.conf).")
    records: list[DnsRecordCheck]
