from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app import dkim
from app.audit import AuditDep
from app.auth import READ, WRITE, PrincipalDep, require_domain
from app.config import Settings
from app.crud import dkim as rules
from app.deps import SessionDep, SettingsDep, WriteSessionDep
from app.errors import problem_responses
from app.models import DkimKeyCreate, DkimKeyDeleted, DkimKeyPublic, DkimKeys, DkimKeyUpdate
from app.params import DomainPath

router = APIRouter(prefix="/domains/{name}/dkim", tags=["dkim"])

SelectorPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
        description="The key's selector.",
    ),
]
Force = Annotated[
    bool, Query(description="Delete the active key too: the domain's mail is then unsigned.")
]


def _new_key(name: str, body: DkimKeyCreate, settings: Settings) -> tuple[str, dkim.NewKey, str]:
    """Selector, key pair and sealed private key; made before any transaction starts
    (a 4096-bit RSA key takes seconds)."""
    selector = body.selector or dkim.new_selector()
    algorithm = body.algorithm or settings.DKIM_ALGORITHM
    new = dkim.generate(algorithm, body.bits or settings.DKIM_RSA_BITS)
    return selector, new, dkim.seal(new.private_pem, name, selector, settings.DKIM_KEY_SECRET)


@router.get(
    "",
    operation_id="list_dkim_keys",
    summary="List a domain's DKIM keys",
    dependencies=[READ],
    responses=problem_responses(403, 404, 422),
)
def list_dkim_keys(name: DomainPath, session: SessionDep, principal: PrincipalDep) -> DkimKeys:
    """Every key of the domain with its state and the TXT record that publishes it,
    newest first. Private keys are never answered."""
    require_domain(principal, name, "name")
    return rules.list_keys(session, name)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="create_dkim_key",
    summary="Make a DKIM key",
    dependencies=[WRITE],
    responses=problem_responses(400, 403, 404, 409, 415, 422),
)
def create_dkim_key(
    name: DomainPath,
    body: DkimKeyCreate,
    session: WriteSessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    audit: AuditDep,
    response: Response,
) -> DkimKeyPublic:
    """Make a key pair (RSA 2048 unless told otherwise; `ed25519` on request).

    The domain's first key signs at once (`active`). A further key is `pending`:
    publish its record, check it (`GET /domains/{name}/dns/check`), then activate it
    with `PATCH .../dkim/{selector}` `{"state": "active"}` -- a rotation no receiver sees fail.
    `"activate": true` rotates at once: the new key signs, the previous active key is
    `retired` and stays published (so mail already signed with it still verifies)
    until you delete it; publish the new record before the next sync.
    rspamd signs with the active key once `mailprov dkim sync` has run on the mail
    host. A domain-scoped key may manage its own domains' keys.
    """
    require_domain(principal, name, "name")
    selector, new, sealed = _new_key(name, body, settings)
    audit.target = dkim.record_name(selector, name)
    created = rules.add_key(session, name, selector, new, sealed, activate=body.activate)
    response.headers["Location"] = f"/domains/{name}/dkim/{selector}"
    return created


@router.patch(
    "/{selector}",
    operation_id="activate_dkim_key",
    summary="Sign with this DKIM key",
    dependencies=[WRITE],
    responses=problem_responses(400, 403, 404, 415, 422),
)
def activate_dkim_key(
    name: DomainPath,
    selector: SelectorPath,
    body: DkimKeyUpdate,
    session: WriteSessionDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> DkimKeyPublic:
    """`{"state": "active"}` makes a pending (or retired) key the one that signs; the
    key that signed until now is retired and stays published. Publish the key's
    record (and check it) first."""
    require_domain(principal, name, "name")
    audit.target = dkim.record_name(selector.lower(), name)
    return rules.activate_key(session, name, selector.lower())


@router.delete(
    "/{selector}",
    operation_id="delete_dkim_key",
    summary="Delete a DKIM key",
    dependencies=[WRITE],
    responses=problem_responses(403, 404, 409, 422),
)
def delete_dkim_key(
    name: DomainPath,
    selector: SelectorPath,
    session: WriteSessionDep,
    principal: PrincipalDep,
    audit: AuditDep,
    force: Force = False,
) -> DkimKeyDeleted:
    """Delete a pending or retired key: its record can then leave the zone, and the
    next `mailprov dkim sync` removes its file. Keep a retired key a few days after a
    rotation, until mail signed with it has been delivered and checked. The active
    key is refused with 409 unless `force=true`.
    """
    require_domain(principal, name, "name")
    audit.target = dkim.record_name(selector.lower(), name)
    return rules.delete_key(session, name, selector.lower(), force)
