from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from app import dnscheck, records
from app.auth import READ, PrincipalDep, require_domain
from app.crud import dkim as rules
from app.deps import SessionDep, SettingsDep
from app.errors import problem_responses
from app.models import DnsCheck, DnsRecords
from app.params import DomainPath

router = APIRouter(prefix="/domains/{name}/dns", tags=["dns"])

ZONE_MEDIA_TYPE = "text/dns"  # RFC 4027: zone-file text
Format = Annotated[
    Literal["json", "zone"] | None,
    Query(description="`zone` for zone-file lines (like `Accept: text/dns`)."),
]


def _wants_zone(request: Request, format_: str | None) -> bool:
    if format_ is not None:
        return format_ == "zone"
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == ZONE_MEDIA_TYPE for part in accept.split(","))


@router.get(
    "",
    operation_id="read_dns_records",
    summary="The DNS records a domain needs",
    dependencies=[READ],
    response_model=DnsRecords,
    responses={
        200: {
            "description": "The records, as JSON or as zone-file lines",
            "content": {
                ZONE_MEDIA_TYPE: {
                    "schema": {"type": "string"},
                    "example": "; mailprov: the records example.org needs\n"
                    "example.org. 3600 IN MX 10 mail.example.net.\n"
                    'example.org. 3600 IN TXT "v=spf1 mx -all"\n',
                }
            },
        },
        **problem_responses(403, 404, 422),
    },
)
def read_dns_records(
    name: DomainPath,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    format: Format = None,
) -> DnsRecords | Response:
    """MX, SPF, DMARC, a DKIM record for every published key, the records mail clients
    use to find the servers (autoconfig/autodiscover CNAMEs and SRV), and MTA-STS and
    TLS reporting when they are configured. Host names and policies come from the
    `MAILPROV_DNS_*` settings.

    Zone-file lines (`text/dns`) with `?format=zone` or `Accept: text/dns`.
    """
    require_domain(principal, name, "name")
    wanted = records.records_for(name, rules.keys_of(session, name), settings)
    if _wants_zone(request, format):
        return PlainTextResponse(records.zone_text(wanted), media_type=ZONE_MEDIA_TYPE)
    return wanted


@router.get(
    "/check",
    operation_id="check_dns_records",
    summary="Check that a domain's DNS records are published",
    dependencies=[READ],
    responses=problem_responses(403, 404, 422),
)
def check_dns_records(
    name: DomainPath, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> DnsCheck:
    """Resolve every record of `GET /domains/{name}/dns` through `MAILPROV_DNS_RESOLVERS`
    and say, for each, `ok`, `missing`, `different` (with what was `found`) or `error`
    (the resolver did not answer in `MAILPROV_DNS_TIMEOUT` seconds, or failed).

    Always 200 when the domain exists: `status` sums it up (`ok`, `problems`, or
    `unknown` when lookups failed but nothing was wrong). Resolvers cache answers,
    a missing record too (for the zone's negative TTL): ask the zone's own name
    server for what was just published.
    """
    require_domain(principal, name, "name")
    wanted = records.records_for(name, rules.keys_of(session, name), settings)
    session.close()  # no connection held while waiting for DNS
    return dnscheck.check(wanted, settings)
