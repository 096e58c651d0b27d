"""Path and query parameters that name domains and addresses, in canonical form."""

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Path, Query

from app.addresses import normalize_address, normalize_alias_source, normalize_domain
from app.errors import Unprocessable
from app.models import RAW_MAX


def _canonical(normalize: Callable[[str], str], value: str, field: str, location: str) -> str:
    try:
        return normalize(value)
    except ValueError as exc:
        raise Unprocessable(f"{field} {exc}", field=field, location=location) from None


def _domain_path(
    name: Annotated[str, Path(max_length=RAW_MAX, description="Domain name.")],
) -> str:
    return _canonical(normalize_domain, name, "name", "path")


def _address_path(
    address: Annotated[str, Path(max_length=RAW_MAX, description="Mailbox address.")],
) -> str:
    return _canonical(normalize_address, address, "address", "path")


def _source_path(
    source: Annotated[
        str, Path(max_length=RAW_MAX, description="Alias source: an address or @domain.")
    ],
) -> str:
    return _canonical(normalize_alias_source, source, "source", "path")


def _destination_path(
    destination: Annotated[str, Path(max_length=RAW_MAX, description="A destination address.")],
) -> str:
    return _canonical(normalize_address, destination, "destination", "path")


def _domain_filter(
    domain: Annotated[
        str | None, Query(max_length=RAW_MAX, description="Only items of this domain.")
    ] = None,
) -> str | None:
    return None if domain is None else _canonical(normalize_domain, domain, "domain", "query")


def _source_filter(
    source: Annotated[
        str | None, Query(max_length=RAW_MAX, description="Only the alias with this source.")
    ] = None,
) -> str | None:
    return None if source is None else _canonical(normalize_alias_source, source, "source", "query")


def _destination_filter(
    destination: Annotated[
        str | None,
        Query(max_length=RAW_MAX, description="Only aliases that deliver to this address."),
    ] = None,
) -> str | None:
    if destination is None:
        return None
    return _canonical(normalize_address, destination, "destination", "query")


DomainPath = Annotated[str, Depends(_domain_path)]
AddressPath = Annotated[str, Depends(_address_path)]
SourcePath = Annotated[str, Depends(_source_path)]
DestinationPath = Annotated[str, Depends(_destination_path)]
DomainFilter = Annotated[str | None, Depends(_domain_filter)]
SourceFilter = Annotated[str | None, Depends(_source_filter)]
DestinationFilter = Annotated[str | None, Depends(_destination_filter)]
Search = Annotated[
    str | None,
    Query(max_length=100, description="Only items whose name contains this text."),
]
Cascade = Annotated[
    bool,
    Query(description="Also remove what depends on it, instead of refusing with 409."),
]
