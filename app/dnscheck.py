"""Are a domain's records published? Ask the configured resolvers and compare.

Every record is looked up on its own (in parallel, each bounded by
``MAILPROV_DNS_TIMEOUT``) and judged by what matters to the receivers that read
it, not byte for byte: an MX pointing at this host (any priority), exactly one
SPF record equal to ours, DMARC and DKIM tags equal to ours, CNAME targets and
SRV ports and targets. A lookup that fails is that record's ``error``, never
the whole answer's: the check is a report, answered 200 whatever it found.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import dns.exception
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver

from app.config import Settings, parse_resolver
from app.models import CheckResult, DnsCheck, DnsRecord, DnsRecordCheck, DnsRecords

MAX_PARALLEL = 8


def _resolver(settings: Settings) -> dns.resolver.Resolver:
    if settings.DNS_RESOLVERS:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(*parse_resolver(entry))
            for entry in settings.DNS_RESOLVERS
        ]
    else:
        resolver = dns.resolver.Resolver()  # /etc/resolv.conf
    resolver.lifetime = settings.DNS_TIMEOUT
    resolver.timeout = settings.DNS_TIMEOUT
    resolver.cache = None  # ask again every time: the point is to see a fresh change
    return resolver


def _tags(text: str) -> dict[str, str]:
    """``k=v; k=v`` -> {k: v}; keys lower-cased, blanks inside values dropped."""
    tags = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def _txt(rdata: dns.rdata.Rdata) -> str:
    return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


Judge = Callable[[DnsRecord, list[dns.rdata.Rdata]], tuple[CheckResult, str | None]]


def _judge_mx(record: DnsRecord, answers: list[dns.rdata.Rdata]) -> tuple[CheckResult, str | None]:
    want = _norm(record.value.split()[1])
    if any(_norm(r.exchange.to_text()) == want for r in answers):  # type: ignore[attr-defined]
        return "ok", None
    return "different", f"no MX points at {want}"


def _judge_cname(
    record: DnsRecord, answers: list[dns.rdata.Rdata]
) -> tuple[CheckResult, str | None]:
    if any(_norm(r.target.to_text()) == _norm(record.value) for r in answers):  # type: ignore[attr-defined]
        return "ok", None
    return "different", f"the CNAME does not point at {_norm(record.value)}"


def _judge_srv(record: DnsRecord, answers: list[dns.rdata.Rdata]) -> tuple[CheckResult, str | None]:
    _, _, port, target = record.value.split()
    for r in answers:
        if r.port == int(port) and _norm(r.target.to_text()) == _norm(target):  # type: ignore[attr-defined]
            return "ok", None
    return "different", f"no SRV record for port {port} at {_norm(target)}"


def _judge_txt(prefix: str, what: str, exact: bool) -> Judge:
    """TXT records whose text starts with ``prefix``: exactly one, equal to ours
    (``exact``: as text, blanks and case aside; else tag by tag)."""

    def judge(record: DnsRecord, answers: list[dns.rdata.Rdata]) -> tuple[CheckResult, str | None]:
        texts = [_txt(r) for r in answers]
        mine = [t for t in texts if _is_a(prefix, t)]
        if not mine:
            return "missing", f"no {what} record among the TXT records at this name"
        if len(mine) > 1 and what in {"SPF", "DMARC"}:
            return "different", f"{len(mine)} {what} records: receivers treat that as an error"
        for text in mine:
            if exact and " ".join(text.lower().split()) == " ".join(record.value.lower().split()):
                return "ok", None
            if not exact and _same_tags(what, _tags(text), _tags(record.value)):
                return "ok", None
        return "different", f"the {what} record differs"

    return judge


def _is_a(prefix: str, text: str) -> bool:
    if prefix == "v=DKIM1":  # v= is optional in a DKIM key record; p= is not
        return "p" in _tags(text)
    return "".join(text.split()).lower().startswith(prefix.lower())


def _same_tags(what: str, found: dict[str, str], wanted: dict[str, str]) -> bool:
    if what == "DKIM":
        # The key is what matters; k= defaults to rsa (RFC 6376 3.6.1).
        return found.get("p") == wanted.get("p") and found.get("k", "rsa") == wanted.get("k")
    return {k: v.lower() for k, v in found.items()} == {k: v.lower() for k, v in wanted.items()}


JUDGES: dict[str, Judge] = {
    "mx": _judge_mx,
    "spf": _judge_txt("v=spf1", "SPF", exact=True),
    "dmarc": _judge_txt("v=DMARC1", "DMARC", exact=False),
    "dkim": _judge_txt("v=DKIM1", "DKIM", exact=False),
    "mta-sts": _judge_txt("v=STSv1", "MTA-STS", exact=False),
    "tlsrpt": _judge_txt("v=TLSRPTv1", "TLS-RPT", exact=False),
}


def _judge_for(record: DnsRecord) -> Judge:
    if record.purpose in JUDGES:
        return JUDGES[record.purpose]
    return _judge_cname if record.type == "CNAME" else _judge_srv


def check_record(record: DnsRecord, settings: Settings) -> DnsRecordCheck:
    def result(outcome: CheckResult, found: list[str], reason: str | None) -> DnsRecordCheck:
        return DnsRecordCheck(**record.model_dump(), result=outcome, found=found, reason=reason)

    try:
        answer = _resolver(settings).resolve(
            record.name, record.type, raise_on_no_answer=False, search=False
        )
    except dns.resolver.NXDOMAIN:
        return result("missing", [], f"{record.name} does not exist (NXDOMAIN)")
    except dns.resolver.NoNameservers as exc:
        return result("error", [], f"no resolver answered usefully: {_short(exc)}")
    except dns.exception.Timeout:
        return result("error", [], f"no answer within {settings.DNS_TIMEOUT:g} s")
    except dns.resolver.NoResolverConfiguration:
        return result("error", [], "no resolvers: set MAILPROV_DNS_RESOLVERS")
    except dns.exception.DNSException as exc:
        return result("error", [], f"lookup failed: {_short(exc)}")
    answers = list(answer.rrset) if answer.rrset is not None else []
    show = _txt if record.type == "TXT" else dns.rdata.Rdata.to_text
    found = [show(r) for r in answers]
    if not answers:
        return result("missing", [], f"{record.name} has no {record.type} record")
    outcome, reason = _judge_for(record)(record, answers)
    return result(outcome, found, reason)


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def check(records: DnsRecords, settings: Settings) -> DnsCheck:
    wanted = records.records
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(wanted)))) as pool:
        checked = list(pool.map(lambda record: check_record(record, settings), wanted))
    results = {c.result for c in checked}
    if results & {"missing", "different"}:
        status = "problems"
    elif "error" in results:
        status = "unknown"
    else:
        status = "ok"
    return DnsCheck(
        domain=records.domain,
        status=status,
        resolvers=list(settings.DNS_RESOLVERS) or ["system"],
        records=checked,
    )
