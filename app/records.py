"""The DNS records a hosted domain needs, built from the settings and its DKIM keys.

MX and SPF let other servers deliver to and accept mail from this host, DMARC
tells them what to do with mail that fails both SPF and DKIM, and one DKIM
record per published selector carries the public keys. Clients find the
servers through autoconfig/autodiscover and RFC 6186/8314 SRV records; MTA-STS
and TLS reporting are optional. dnspython renders the record data, so the
zone-file lines quote and split exactly as a name server reads them.
"""

import hashlib
import socket
from collections.abc import Sequence
from functools import lru_cache

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT

from app import dkim
from app.addresses import normalize_domain
from app.config import Settings
from app.models import DnsRecord, DnsRecords
from app.tables import DkimKey

TXT_CHUNK = 255  # bytes in one character-string (RFC 1035 3.3)


@lru_cache
def _machine_fqdn() -> str:
    return socket.getfqdn()


def mx_host(settings: Settings) -> str:
    """The host name MX, SRV and CNAME records point at (no final dot)."""
    host = (settings.DNS_MX_HOST or _machine_fqdn()).strip().rstrip(".").lower()
    try:
        return normalize_domain(host, max_bytes=253)
    except ValueError:
        # A machine without a qualified name: still printed, and check-config says so.
        return host


def _absolute(name: str) -> str:
    return name.rstrip(".") + "."


def txt_rdata_text(value: str) -> str:
    """A TXT record's text as zone-file data: quoted strings of at most 255 bytes."""
    raw = value.encode("ascii")
    chunks = [raw[i : i + TXT_CHUNK] for i in range(0, len(raw), TXT_CHUNK)] or [b""]
    rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)
    return rdata.to_text()


def _record(
    purpose: str,
    name: str,
    rtype: str,
    value: str,
    ttl: int,
    *,
    selector: str | None = None,
    state: str | None = None,
) -> DnsRecord:
    if rtype == "TXT":
        data = txt_rdata_text(value)
    else:
        # Parsed and printed again: the zone line is what a name server would read.
        data = dns.rdata.from_text(dns.rdataclass.IN, rtype, value).to_text()
    return DnsRecord(
        purpose=purpose,
        name=name,
        type=rtype,
        ttl=ttl,
        value=value,
        zone=f"{name} {ttl} IN {rtype} {data}",
        selector=selector,
        state=state,
    )


def mta_sts_policy(settings: Settings) -> str:
    """RFC 8461 policy file text (CRLF lines) for the configured mode."""
    lines = [
        "version: STSv1",
        f"mode: {settings.DNS_MTA_STS}",
        f"mx: {mx_host(settings)}",
        f"max_age: {settings.DNS_MTA_STS_MAX_AGE}",
    ]
    return "\r\n".join(lines) + "\r\n"


def _mta_sts_id(policy: str) -> str:
    # Changes whenever the policy does, which is what senders watch the id for.
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def records_for(domain: str, keys: Sequence[DkimKey], settings: Settings) -> DnsRecords:
    """Every record to publish for ``domain``; ``keys`` are its DKIM keys (all published)."""
    ttl = settings.DNS_TTL
    apex = _absolute(domain)
    host = _absolute(mx_host(settings))
    records = [
        _record("mx", apex, "MX", f"{settings.DNS_MX_PRIORITY} {host}", ttl),
        _record("spf", apex, "TXT", settings.DNS_SPF.replace("{domain}", domain), ttl),
        _record(
            "dmarc", f"_dmarc.{apex}", "TXT", settings.DNS_DMARC.replace("{domain}", domain), ttl
        ),
    ]
    order = {"active": 0, "pending": 1, "retired": 2}
    for key in sorted(keys, key=lambda k: (order.get(k.state, 3), k.selector)):
        records.append(
            _record(
                "dkim",
                dkim.record_name(key.selector, domain),
                "TXT",
                dkim.txt_value(key.algorithm, key.public_key),
                ttl,
                selector=key.selector,
                state=key.state,
            )
        )
    if settings.DNS_CLIENT_RECORDS:
        records += [
            _record("autoconfig", f"autoconfig.{apex}", "CNAME", host, ttl),
            _record("autodiscover", f"autodiscover.{apex}", "CNAME", host, ttl),
            _record("srv-imaps", f"_imaps._tcp.{apex}", "SRV", f"0 1 993 {host}", ttl),
            _record("srv-submissions", f"_submissions._tcp.{apex}", "SRV", f"0 1 465 {host}", ttl),
            _record("srv-submission", f"_submission._tcp.{apex}", "SRV", f"0 1 587 {host}", ttl),
            _record(
                "srv-autodiscover", f"_autodiscover._tcp.{apex}", "SRV", f"0 1 443 {host}", ttl
            ),
        ]
    policy = None
    if settings.DNS_MTA_STS != "off":
        policy = mta_sts_policy(settings)
        records += [
            _record(
                "mta-sts", f"_mta-sts.{apex}", "TXT", f"v=STSv1; id={_mta_sts_id(policy)}", ttl
            ),
            _record("mta-sts-policy", f"mta-sts.{apex}", "CNAME", host, ttl),
        ]
    if settings.DNS_TLSRPT_RUA:
        records.append(
            _record(
                "tlsrpt",
                f"_smtp._tls.{apex}",
                "TXT",
                f"v=TLSRPTv1; rua={settings.DNS_TLSRPT_RUA}",
                ttl,
            )
        )
    return DnsRecords(domain=domain, records=records, mta_sts_policy=policy)


def zone_text(records: DnsRecords) -> str:
    """The records as zone-file lines, ready to paste (or to $INCLUDE)."""
    head = f"; mailprov: the records {records.domain} needs\n"
    return head + "".join(record.zone + "\n" for record in records.records)
