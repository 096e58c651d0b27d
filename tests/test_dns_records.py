"""GET /domains/{name}/dns (the records to publish) and /dns/check (are they?)."""

from collections.abc import Iterator

import dns.rdata
import dns.rdataclass
import dns.zone
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine

from app import dnscheck
from app.config import Settings, parse_resolver
from app.models import DnsRecord
from app.records import txt_rdata_text
from tests.helpers import api_client, empty_database

DNS = {
    "DNS_MX_HOST": "mail.example.net",
    "DNS_DMARC": "v=DMARC1; p=reject; rua=mailto:dmarc@{domain}",
    # Nothing listens on the discard port: every lookup fails, quickly.
    "DNS_RESOLVERS": ["127.0.0.1:9"],
    "DNS_TIMEOUT": 0.3,
}


@pytest.fixture
def dns_client(
    settings: Settings, engine: Engine, request: pytest.FixtureRequest
) -> Iterator[TestClient]:
    extra = getattr(request, "param", {})
    with api_client(settings.model_copy(update=DNS | extra)) as client:
        assert client.post("/domains", json={"name": "example.org"}).status_code == 201
        yield client
    empty_database(engine)


def by_purpose(client: TestClient) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for record in client.get("/domains/example.org/dns").json()["records"]:
        found.setdefault(record["purpose"], []).append(record)
    return found


def test_read_records_lists_mx_spf_dmarc_and_client_records(dns_client: TestClient) -> None:
    records = by_purpose(dns_client)
    assert records["mx"][0]["zone"] == "example.org. 3600 IN MX 10 mail.example.net."
    assert records["spf"][0]["value"] == "v=spf1 mx -all"
    assert records["dmarc"][0]["name"] == "_dmarc.example.org."
    assert records["dmarc"][0]["value"] == "v=DMARC1; p=reject; rua=mailto:dmarc@example.org"
    assert records["autoconfig"][0]["value"] == "mail.example.net."
    assert records["srv-submissions"][0]["value"] == "0 1 465 mail.example.net."
    assert "dkim" not in records and "mta-sts" not in records and "tlsrpt" not in records


def test_read_records_has_one_dkim_record_per_key_active_first(dns_client: TestClient) -> None:
    dns_client.post("/domains/example.org/dkim", json={"selector": "b1"})  # rsa, active
    dns_client.post("/domains/example.org/dkim", json={"selector": "a2", "algorithm": "ed25519"})
    keys = by_purpose(dns_client)["dkim"]
    assert [(k["selector"], k["state"]) for k in keys] == [("b1", "active"), ("a2", "pending")]
    rsa_zone = str(keys[0]["zone"])
    # 2048-bit RSA: longer than one 255-byte string, so split in the zone line only.
    assert rsa_zone.count('" "') == 1 and '" "' not in str(keys[0]["value"])


@pytest.mark.parametrize(
    "dns_client",
    [{"DNS_MTA_STS": "enforce", "DNS_TLSRPT_RUA": "mailto:tls@example.org",
      "DNS_CLIENT_RECORDS": False}],
    indirect=True,
)  # fmt: skip
def test_read_records_with_mta_sts_prints_its_policy(dns_client: TestClient) -> None:
    answer = dns_client.get("/domains/example.org/dns").json()
    purposes = {r["purpose"] for r in answer["records"]}
    assert {"mta-sts", "mta-sts-policy", "tlsrpt"} <= purposes
    assert "autoconfig" not in purposes
    assert answer["mta_sts_policy"] == (
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.net\r\nmax_age: 604800\r\n"
    )


@pytest.mark.parametrize("how", ["query", "accept"])
def test_read_records_as_zone_lines_parse_as_a_zone(dns_client: TestClient, how: str) -> None:
    dns_client.post("/domains/example.org/dkim", json={})
    if how == "query":
        response = dns_client.get("/domains/example.org/dns", params={"format": "zone"})
    else:
        response = dns_client.get("/domains/example.org/dns", headers={"Accept": "text/dns"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/dns")
    soa = (
        "example.org. 60 IN SOA ns.example.org. h.example.org. 1 60 60 600 60\n"
        "example.org. 60 IN NS ns.example.org.\n"
    )
    zone = dns.zone.from_text(soa + response.text, origin="example.org.", relativize=False)
    names = {str(name) for name in zone.nodes}
    assert "_dmarc.example.org." in names and "_imaps._tcp.example.org." in names
    dkim_names = [n for n in names if "._domainkey." in n]
    txt = zone.find_rdataset(dkim_names[0], "TXT")[0]
    json_value = by_purpose(dns_client)["dkim"][0]["value"]
    assert b"".join(txt.strings).decode() == json_value


def test_read_records_of_unknown_domain_is_404(dns_client: TestClient) -> None:
    assert dns_client.get("/domains/nowhere.org/dns").status_code == 404
    assert dns_client.get("/domains/nowhere.org/dns/check").status_code == 404


def test_check_with_resolver_down_reports_each_record_as_error(dns_client: TestClient) -> None:
    response = dns_client.get("/domains/example.org/dns/check")
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "unknown" and result["resolvers"] == ["127.0.0.1:9"]
    assert {r["result"] for r in result["records"]} == {"error"}
    assert all(r["reason"] for r in result["records"])


# ---------------------------------------------------------------- judging what was found


def record(purpose: str, rtype: str, value: str) -> DnsRecord:
    return DnsRecord(purpose=purpose, name="example.org.", type=rtype, ttl=60, value=value,
                     zone="")  # type: ignore[arg-type]  # fmt: skip


def rdata(rtype: str, text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, rtype, text)


@pytest.mark.parametrize(
    ("purpose", "rtype", "wanted", "found", "result"),
    [
        ("mx", "MX", "10 mail.example.net.", ["20 MAIL.example.net."], "ok"),
        ("mx", "MX", "10 mail.example.net.", ["10 mx.other.net."], "different"),
        ("spf", "TXT", "v=spf1 mx -all", ['"v=spf1  MX -all"', '"google-site=x"'], "ok"),
        ("spf", "TXT", "v=spf1 mx -all", ['"v=spf1 a -all"'], "different"),
        ("spf", "TXT", "v=spf1 mx -all", ['"v=spf1 mx -all"', '"v=spf1 a -all"'], "different"),
        ("spf", "TXT", "v=spf1 mx -all", ['"google-site=x"'], "missing"),
        ("dmarc", "TXT", "v=DMARC1; p=reject", ['"v=DMARC1;p=reject"'], "ok"),
        ("dmarc", "TXT", "v=DMARC1; p=reject", ['"v=DMARC1; p=none"'], "different"),
        ("dkim", "TXT", "v=DKIM1; k=rsa; p=AAAA", ['"p=AA" "AA"'], "ok"),
        ("dkim", "TXT", "v=DKIM1; k=rsa; p=AAAA", ['"v=DKIM1; k=rsa; p=BBBB"'], "different"),
        ("dkim", "TXT", "v=DKIM1; k=ed25519; p=AAAA", ['"v=DKIM1; p=AAAA"'], "different"),
        ("autoconfig", "CNAME", "mail.example.net.", ["mail.example.net."], "ok"),
        ("autoconfig", "CNAME", "mail.example.net.", ["web.example.net."], "different"),
        ("srv-imaps", "SRV", "0 1 993 mail.example.net.", ["5 0 993 mail.example.net."], "ok"),
        ("srv-imaps", "SRV", "0 1 993 mail.example.net.", ["0 1 143 mail.example.net."],
         "different"),
    ],
)  # fmt: skip
def test_judge_found_records(
    purpose: str, rtype: str, wanted: str, found: list[str], result: str
) -> None:
    outcome, reason = dnscheck._judge_for(record(purpose, rtype, wanted))(
        record(purpose, rtype, wanted), [rdata(rtype, text) for text in found]
    )
    assert outcome == result
    assert (reason is None) == (result == "ok")


def test_txt_rdata_splits_long_text_at_255_bytes() -> None:
    text = txt_rdata_text("x" * 600)
    assert [len(part.strip('"')) for part in text.split(" ")] == [255, 255, 90]


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5300", ("127.0.0.1", 5300)),
        ("[::1]:5300", ("::1", 5300)),
        ("::1", ("::1", 53)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
    ],
)
def test_parse_resolver_accepts_ip_and_port(given: str, parsed: tuple[str, int]) -> None:
    assert parse_resolver(given) == parsed


@pytest.mark.parametrize("given", ["dns.example.org", "127.0.0.1:0", "127.0.0.1:70000",
                                   "[::1]5300", "1.2.3.4:x", ""])  # fmt: skip
def test_parse_resolver_refuses_names_and_bad_ports(given: str) -> None:
    with pytest.raises(ValueError):
        parse_resolver(given)


def test_settings_split_resolvers_and_refuse_bad_values() -> None:
    assert Settings(DNS_RESOLVERS="127.0.0.1:5300, [::1]:53 9.9.9.9").DNS_RESOLVERS == [
        "127.0.0.1:5300",
        "[::1]:53",
        "9.9.9.9",
    ]
    for bad in ({"DNS_RESOLVERS": "ns.example.org"}, {"DNS_MX_HOST": "mail example"},
                {"DNS_SPF": 'v=spf1 "mx"'}, {"DNS_DMARC": "v=DMARC1; p=reject\n"}):  # fmt: skip
        with pytest.raises(ValidationError):
            Settings(**bad)  # type: ignore[arg-type]
