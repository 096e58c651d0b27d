"""Canonical forms of domains and addresses (app.addresses).

Postfix and Dovecot compare strings exactly, so what these functions return is
what the lookups will see; what they refuse must not reach the varchar(50) /
varchar(100) columns. Boundaries are tested at the exact byte.
"""

import pytest

from app.addresses import (
    ADDRESS_MAX_BYTES,
    DOMAIN_MAX_BYTES,
    LOCAL_PART_MAX_BYTES,
    normalize_address,
    normalize_alias_source,
    normalize_domain,
    unicode_domain,
)

# "bücher" is "xn--bcher-kva" (13 bytes) as an A-label.
IDN_LABEL = "bücher"
IDN_A_LABEL = "xn--bcher-kva"


def _domain_of_length(n: int) -> str:
    """An ASCII domain of exactly n bytes, such as aaaa.org."""
    return "a" * (n - 4) + ".org"


def _idn_domain_of_a_label_length(n: int) -> str:
    """A U-label domain whose A-label form is exactly n bytes long."""
    return f"{IDN_LABEL}." + "a" * (n - len(IDN_A_LABEL) - len(".") - len(".org")) + ".org"


# ---------------------------------------------------------------- normalize_domain


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.org", "example.org"),
        ("Example.ORG", "example.org"),
        ("EXAMPLE.ORG", "example.org"),
        ("mail.Sub.Example.org", "mail.sub.example.org"),
        ("a.b", "a.b"),
        ("1e100.net", "1e100.net"),
        ("123.example", "123.example"),  # digits are fine outside the top-level label
        ("my-domain.org", "my-domain.org"),
    ],
)
def test_normalize_domain_ascii_lower_cased(value: str, expected: str) -> None:
    assert normalize_domain(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bücher.de", "xn--bcher-kva.de"),
        ("BÜCHER.DE", "xn--bcher-kva.de"),
        ("Bücher.De", "xn--bcher-kva.de"),
        ("straße.de", "xn--strae-oqa.de"),  # IDNA2008: ß is kept, not mapped to "ss"
        ("é.fr", "xn--9ca.fr"),
        ("mail.bücher.de", "mail.xn--bcher-kva.de"),
        ("example。org", "example.org"),  # ideographic full stop is a label separator
    ],
)
def test_normalize_domain_unicode_becomes_a_label(value: str, expected: str) -> None:
    assert normalize_domain(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("XN--BCHER-KVA.DE", "xn--bcher-kva.de"),
        ("xn--Bcher-KVA.de", "xn--bcher-kva.de"),
        ("mail.xn--bcher-kva.de", "mail.xn--bcher-kva.de"),
    ],
)
def test_normalize_domain_a_label_input_kept(value: str, expected: str) -> None:
    assert normalize_domain(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "xn--zz.de",  # not valid Punycode
        "xn--a.de",
        "xn--.de",
        "xn--abc-.de",
        "xn--bcher-kva.xn--zz",
        "xn--ls8h.la",  # decodes to an emoji: disallowed by IDNA2008
    ],
)
def test_normalize_domain_invalid_a_label_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_domain(value)


def test_normalize_domain_round_trips_through_unicode_form() -> None:
    canonical = normalize_domain("bücher.de")
    assert unicode_domain(canonical) == "bücher.de"
    assert normalize_domain(unicode_domain(canonical)) == canonical


def test_normalize_domain_max_length_accepted() -> None:
    name = _domain_of_length(DOMAIN_MAX_BYTES)
    assert len(name) == DOMAIN_MAX_BYTES == 50
    assert normalize_domain(name) == name


def test_normalize_domain_one_byte_over_max_refused() -> None:
    name = _domain_of_length(DOMAIN_MAX_BYTES + 1)
    assert len(name) == 51
    with pytest.raises(ValueError, match="longer than 50 bytes"):
        normalize_domain(name)


def test_normalize_domain_idn_max_a_label_length_accepted() -> None:
    name = _idn_domain_of_a_label_length(DOMAIN_MAX_BYTES)
    result = normalize_domain(name)
    assert result.startswith(IDN_A_LABEL + ".")
    assert len(result) == DOMAIN_MAX_BYTES


def test_normalize_domain_idn_a_label_one_byte_over_max_refused() -> None:
    # The limit is on the stored (A-label) form: the Unicode form is much shorter.
    name = _idn_domain_of_a_label_length(DOMAIN_MAX_BYTES + 1)
    assert len(name.encode("utf-8")) < DOMAIN_MAX_BYTES
    with pytest.raises(ValueError, match="longer than 50 bytes"):
        normalize_domain(name)


@pytest.mark.parametrize(
    "value",
    ["1.2.3.4", "127.0.0.1", "10.0.0.01", "example.123", "[127.0.0.1]", "::1", "[IPv6:::1]"],
)
def test_normalize_domain_ip_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_domain(value)


@pytest.mark.parametrize("value", ["localhost", "org", "bücher", "xn--bcher-kva"])
def test_normalize_domain_single_label_refused(value: str) -> None:
    with pytest.raises(ValueError, match="at least two labels"):
        normalize_domain(value)


@pytest.mark.parametrize("value", ["example.org.", "xn--bcher-kva.de.", "bücher.de.", "."])
def test_normalize_domain_trailing_dot_refused(value: str) -> None:
    with pytest.raises(ValueError, match="final dot"):
        normalize_domain(value)


@pytest.mark.parametrize("value", ["", ".", "..", ".example.org", "example..org", "example.org。"])
def test_normalize_domain_empty_label_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_domain(value)


@pytest.mark.parametrize(
    "value",
    [
        " example.org",
        "example.org ",
        "\texample.org",
        "example.org\n",
        "exa mple.org",
        "exa_mple.org",
        "-example.org",
        "example-.org",
        "ex--ample.org",  # "--" at positions 3-4 is reserved for A-labels
        "exa/mple.org",
        "exa@mple.org",
        "user@example.org",
        "example.org:25",
    ],
)
def test_normalize_domain_invalid_characters_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_domain(value)


# ---------------------------------------------------------------- normalize_address


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("john@example.org", "john@example.org"),
        ("John.Doe@Example.ORG", "john.doe@example.org"),
        ("JOHN@EXAMPLE.ORG", "john@example.org"),
        ("user@bücher.de", "user@xn--bcher-kva.de"),
        ("User@BÜCHER.DE", "user@xn--bcher-kva.de"),
        ("user@XN--BCHER-KVA.DE", "user@xn--bcher-kva.de"),
    ],
)
def test_normalize_address_canonical_form(value: str, expected: str) -> None:
    assert normalize_address(value) == expected


@pytest.mark.parametrize(
    "local",
    [
        "john.doe",
        "a.b.c",
        "a",
        "0",
        "john+tag",
        "o'neil",
        "first_last",
        "first-last",
        "#$&'*+=?^_`{}~-",
        "a.#.b",
    ],
)
def test_normalize_address_allowed_local_part_accepted(local: str) -> None:
    assert normalize_address(f"{local}@example.org") == f"{local}@example.org"


@pytest.mark.parametrize(
    "local",
    [
        ".john",  # leading dot
        "john.",  # trailing dot
        "john..doe",  # double dot
        ".",
        "a/b",  # would reach into the maildir path
        "../x",
        "a|b",
        "a%b",
        "a!b",
        "a b",
        " a",
        "a\tb",
        "a\nb",
        "a\x00b",
        '"john"',
        '"john doe"',
        "a\\b",
        "(a)",
        "a,b",
        "a;b",
        "a:b",
        "a<b>",
        "a[b]",
        "a@b",
    ],
)
def test_normalize_address_refused_local_part_character(local: str) -> None:
    with pytest.raises(ValueError, match="invalid local part"):
        normalize_address(f"{local}@example.org")


@pytest.mark.parametrize(
    "local",
    [
        "jöhn",
        "ü",
        "用户",
        "\u212a",  # KELVIN SIGN: lower-cases to ASCII "k", must still be refused
        "\u0130",  # LATIN CAPITAL I WITH DOT ABOVE
        "a\u00a0b",  # no-break space
    ],
)
def test_normalize_address_non_ascii_local_part_refused(local: str) -> None:
    with pytest.raises(ValueError, match="ASCII local part"):
        normalize_address(f"{local}@example.org")


def test_normalize_address_local_part_max_length_accepted() -> None:
    local = "a" * LOCAL_PART_MAX_BYTES
    assert len(local) == 64
    assert normalize_address(f"{local}@example.org") == f"{local}@example.org"


def test_normalize_address_upper_case_local_part_max_length_accepted() -> None:
    local = "A" * LOCAL_PART_MAX_BYTES
    assert normalize_address(f"{local}@example.org") == f"{local.lower()}@example.org"


def test_normalize_address_local_part_one_byte_over_max_refused() -> None:
    local = "a" * (LOCAL_PART_MAX_BYTES + 1)
    with pytest.raises(ValueError, match="local part longer than 64 bytes"):
        normalize_address(f"{local}@example.org")


def test_normalize_address_max_length_accepted() -> None:
    address = "a" * LOCAL_PART_MAX_BYTES + "@" + _domain_of_length(35)
    assert len(address) == ADDRESS_MAX_BYTES == 100
    assert normalize_address(address) == address


def test_normalize_address_one_byte_over_max_refused() -> None:
    # Local part (64) and domain (36) are each within their own limits.
    address = "a" * LOCAL_PART_MAX_BYTES + "@" + _domain_of_length(36)
    assert len(address) == 101
    with pytest.raises(ValueError, match="longer than 100 bytes"):
        normalize_address(address)


def test_normalize_address_idn_a_label_form_over_max_refused() -> None:
    # 96 characters as typed, 103 bytes once the domain is an A-label.
    address = "a" * 60 + "@" + IDN_LABEL + "." + "b" * 24 + ".org"
    assert len(address.encode("utf-8")) <= ADDRESS_MAX_BYTES
    with pytest.raises(ValueError, match="longer than 100 bytes"):
        normalize_address(address)


def test_normalize_address_idn_max_length_accepted() -> None:
    domain = IDN_LABEL + "." + "b" * 17 + ".org"  # 35 bytes as an A-label
    address = "a" * LOCAL_PART_MAX_BYTES + "@" + domain
    result = normalize_address(address)
    assert result == "a" * 64 + "@" + IDN_A_LABEL + "." + "b" * 17 + ".org"
    assert len(result) == ADDRESS_MAX_BYTES


@pytest.mark.parametrize(
    "value",
    [
        "",
        "@",
        "john",
        "@example.org",  # empty local part: a catch-all is not a mailbox address
        "john@",  # empty domain
        "john@.",
        "john@.example.org",
        "john@example..org",
        "@@example.org",
        "john@@example.org",
    ],
)
def test_normalize_address_empty_part_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_address(value)


@pytest.mark.parametrize(
    "value",
    [
        "john@1.2.3.4",
        "john@127.0.0.1",
        "john@[127.0.0.1]",
        "john@[IPv6:::1]",
        "john@localhost",
        "john@org",
        "john@example.org.",
        "john@example.org ",
        " john@example.org",
        "john@exa_mple.org",
        "john@xn--zz.de",
    ],
)
def test_normalize_address_invalid_domain_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_address(value)


# ---------------------------------------------------------------- normalize_alias_source


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("@example.org", "@example.org"),
        ("@Example.ORG", "@example.org"),
        ("@bücher.de", "@xn--bcher-kva.de"),
        ("@XN--BCHER-KVA.DE", "@xn--bcher-kva.de"),
    ],
)
def test_normalize_alias_source_catch_all_canonical(value: str, expected: str) -> None:
    assert normalize_alias_source(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("info@example.org", "info@example.org"),
        ("Info@Example.ORG", "info@example.org"),
        ("info@bücher.de", "info@xn--bcher-kva.de"),
    ],
)
def test_normalize_alias_source_address_same_as_normalize_address(
    value: str, expected: str
) -> None:
    assert normalize_alias_source(value) == expected == normalize_address(value)


def test_normalize_alias_source_catch_all_max_domain_accepted() -> None:
    domain = _domain_of_length(DOMAIN_MAX_BYTES)
    assert normalize_alias_source("@" + domain) == "@" + domain


def test_normalize_alias_source_catch_all_domain_one_byte_over_max_refused() -> None:
    with pytest.raises(ValueError, match="longer than 50 bytes"):
        normalize_alias_source("@" + _domain_of_length(DOMAIN_MAX_BYTES + 1))


def test_normalize_alias_source_address_one_byte_over_max_refused() -> None:
    with pytest.raises(ValueError, match="longer than 100 bytes"):
        normalize_alias_source("a" * LOCAL_PART_MAX_BYTES + "@" + _domain_of_length(36))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "@",
        "@@example.org",
        "@user@example.org",
        "@ example.org",
        "@example.org.",
        "@.example.org",
        "@localhost",
        "@1.2.3.4",
        "@[127.0.0.1]",
        "@xn--zz.de",
        "user@",
        "a/b@example.org",
        "jöhn@example.org",
    ],
)
def test_normalize_alias_source_invalid_refused(value: str) -> None:
    with pytest.raises(ValueError):
        normalize_alias_source(value)
