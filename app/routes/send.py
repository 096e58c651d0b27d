from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import Session

from app import idempotency, ratelimit
from app.audit import Audit, AuditDep
from app.auth import WRITE, PrincipalDep
from app.compose import SendRequest, compose
from app.config import Settings
from app.db import commit, open_session
from app.deps import SettingsDep, WriteSessionDep
from app.errors import (
    PROBLEM_MEDIA_TYPE,
    Forbidden,
    Problem,
    Unprocessable,
    problem_body,
    problem_responses,
)
from app.keys import Principal
from app.metrics import SENDS
from app.models import example
from app.relay import RecipientsRefused, RefusedRecipient, relay
from app.tables import IdempotencyRecord

router = APIRouter(tags=["send"])


class SendResult(BaseModel):
    model_config = example(
        {"status": "queued", "message_id": "<173245.1234.5678@example.org>",
         "queue_id": "4XQz1R2bTmz9vKp", "smtp_response": "250 2.0.0 Ok: queued as 4XQz1R2bTmz9vKp",
         "accepted": ["lisa@example.net"], "refused": []}
    )  # fmt: skip

    status: str = Field(
        description="Always `queued`: the server accepted the message for delivery; "
        "delivery itself happens later and may still fail (bounce)."
    )
    message_id: str = Field(description="The Message-ID header of the message.")
    queue_id: str | None = Field(
        description="The submission server's queue id (Postfix: `queued as <id>`): "
        "what to grep for in the mail log."
    )
    smtp_response: str = Field(description="The server's final reply, as it was.")
    accepted: list[str] = Field(description="Recipients the server accepted.")
    refused: list[RefusedRecipient] = Field(
        description="Recipients the server refused, with its codes."
    )


class TooBig(Problem):
    status, code, title = 413, "message-too-big", "The message is too big"


class CredentialsRequired(Unprocessable):
    code, title = "credentials-required", "No credentials for the submission server"


class SendNotAllowed(Forbidden):
    code, title = "send-not-allowed", "This key may not send as this address"


_RATE_HEADERS = {
    "RateLimit-Limit": "Messages this key may send per window.",
    "RateLimit-Remaining": "Messages left in the current window.",
    "RateLimit-Reset": "Seconds until the whole quota is back.",
    "RateLimit-Policy": "The limit as `<messages>;w=<seconds>`.",
}
SEND_RESPONSES = problem_responses(400, 401, 403, 409, 413, 415, 422, 502, 504)
SEND_RESPONSES[200] = {
    "description": "Queued",
    "headers": {
        name: {"description": text, "schema": {"type": "string" if "Policy" in name else "integer"}}
        for name, text in _RATE_HEADERS.items()
    },
}
SEND_RESPONSES[429] = {
    **SEND_RESPONSES[429],
    "description": "Too many failed authentications from this address, or this key's "
    "send rate is used up (`rate-limited`, with `RateLimit-*`); see `Retry-After`",
}


def may_send_as(principal: Principal, address: str) -> bool:
    if principal.admin:
        return True
    address = address.lower()
    domain = "@" + address.rpartition("@")[2]
    return any(pattern in (address, domain) for pattern in principal.send_as)


@router.post(
    "/send",
    operation_id="send_message",
    summary="Compose a message and relay it through the submission server",
    response_model=SendResult,
    dependencies=[WRITE],
    responses=SEND_RESPONSES,
)
async def send_message(
    body: SendRequest,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    settings: SettingsDep,
    session: WriteSessionDep,
    audit: AuditDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Repeat a request safely: the same key and payload within "
            "24 hours answers the first result again without sending twice.",
        ),
    ] = None,
) -> Any:
    """Build the message (Message-ID, Date, MIME parts; Bcc only in the envelope) and
    relay it, authenticated, over TLS, to the submission service.

    The calling key needs send permission for `from` (admin keys may use any From).
    The SMTP login is `credentials` (a mailbox's own) or, without them, the
    service's configured account; the server's own sender checks apply either way
    and surface as 403 `sender-refused`. A success means *queued*, not delivered.

    Each key may send `MAILPROV_SEND_RATE_LIMIT` messages per
    `MAILPROV_SEND_RATE_WINDOW` seconds (all running copies together): answers
    carry `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and
    `RateLimit-Policy`; past the limit, 429 `rate-limited` with `Retry-After`.
    A replay (same Idempotency-Key) does not count.
    """
    try:
        result = await _send(body, request, response, principal, settings, session, audit,
                             idempotency_key)  # fmt: skip
    except Problem as problem:
        SENDS.labels(problem.code).inc()
        raise
    SENDS.labels("replayed" if isinstance(result, JSONResponse) else "queued").inc()
    return result


async def _send(
    body: SendRequest,
    request: Request,
    response: Response,
    principal: Principal,
    settings: Settings,
    session: Session,
    audit: Audit,
    idempotency_key: str | None,
) -> SendResult | JSONResponse:
    audit.target = body.sender.address
    if not may_send_as(principal, body.sender.address):
        raise SendNotAllowed(
            f"this key may not send as {body.sender.address}", field="from", location="body"
        )
    if body.credentials is not None:
        username = body.credentials.username
        password = body.credentials.password.get_secret_value()
    elif settings.SUBMISSION_USERNAME and settings.SUBMISSION_PASSWORD:
        username = settings.SUBMISSION_USERNAME
        password = settings.SUBMISSION_PASSWORD.get_secret_value()
    else:
        raise CredentialsRequired(
            "give credentials: this service has no submission account configured",
            field="credentials",
        )
    recipients = body.recipients()
    if len(recipients) > settings.SEND_MAX_RECIPIENTS:
        raise Unprocessable(
            f"{len(recipients)} recipients; at most {settings.SEND_MAX_RECIPIENTS} in all",
            field="to",
        )
    composed = compose(body)
    if len(composed.data) > settings.SEND_MAX_BYTES:
        raise TooBig(
            f"the message is {len(composed.data)} bytes; the limit is {settings.SEND_MAX_BYTES}"
        )

    engine = request.app.state.engine
    claimed = idempotency_key is not None
    if idempotency_key is not None:
        payload = body.model_dump(mode="json", by_alias=True, exclude={"credentials": {"password"}})
        digest = idempotency.request_hash(payload)
        window = timedelta(hours=settings.IDEMPOTENCY_HOURS)
        previous = await run_in_threadpool(
            _claim, engine, principal.key_id, idempotency_key, digest, window
        )
        if previous is not None:
            audit.outcome = "replayed"
            await run_in_threadpool(commit, session)  # records the replay on the audit trail
            return JSONResponse(
                previous.response,
                status_code=previous.status or 200,
                media_type=PROBLEM_MEDIA_TYPE if (previous.status or 200) >= 400 else None,
                headers={"Idempotent-Replayed": "true"},
            )
    try:
        if settings.SEND_RATE_LIMIT:
            quota = await run_in_threadpool(
                _take, engine, principal.key_id, settings.SEND_RATE_LIMIT, settings.SEND_RATE_WINDOW
            )
            response.headers.update(quota.headers())
        relayed = await relay(
            settings,
            sender=body.sender.address,
            recipients=recipients,
            data=composed.data,
            username=username,
            password=password,
            caller_credentials=body.credentials is not None,
            smtputf8=composed.smtputf8,
        )
    except Problem as problem:
        # Answers that invite a retry free the Idempotency-Key; every other one is kept.
        if claimed:
            assert idempotency_key is not None
            if problem.retryable:
                await run_in_threadpool(_release, engine, principal.key_id, idempotency_key)
            else:
                document = problem_body(problem, request.url.path)
                if isinstance(problem, RecipientsRefused):
                    document["refused"] = [r.model_dump() for r in problem.refused]
                await run_in_threadpool(
                    _keep, engine, principal.key_id, idempotency_key, problem.status, document
                )
        raise
    result = SendResult(
        status="queued",
        message_id=composed.message_id,
        queue_id=relayed.queue_id,
        smtp_response=relayed.response,
        accepted=relayed.accepted,
        refused=relayed.refused,
    )
    # The answer and its audit entry commit together.
    if idempotency_key is not None:
        await run_in_threadpool(
            idempotency.finish,
            session,
            principal.key_id,
            idempotency_key,
            200,
            result.model_dump(mode="json"),
        )
    else:
        await run_in_threadpool(commit, session)
    return result


def _take(engine: Engine, key_id: str, limit: int, window: int) -> ratelimit.Quota:
    with open_session(engine, write=True) as session:
        return ratelimit.take(session, key_id, limit, window)


def _claim(
    engine: Engine, key_id: str, idem_key: str, digest: str, window: timedelta
) -> IdempotencyRecord | None:
    with open_session(engine, write=True) as session:
        return idempotency.begin(session, key_id, idem_key, digest, window)


def _release(engine: Engine, key_id: str, idem_key: str) -> None:
    with open_session(engine, write=True) as session:
        idempotency.release(session, key_id, idem_key)


def _keep(
    engine: Engine, key_id: str, idem_key: str, status: int, document: dict[str, Any]
) -> None:
    with open_session(engine, write=True) as session:
        idempotency.finish(session, key_id, idem_key, status, document)
