"""The API's request and response models (the tables are in ``app.tables``).

The API names things for people: a mailbox has an ``address`` (column
``email``); ids never leave the service. No ``*Public`` model has a password
or hash field.
"""

from typing import Annotated, Any, Self

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
