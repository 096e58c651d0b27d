"""Every failure as RFC 9457 ``application/problem+json``.

Business rules raise a ``Problem`` subclass; one handler renders it. The
framework's own errors (unknown route, wrong method, invalid or malformed
input) and database outages are rendered the same way, each with a stable
``type`` (``urn:mailprov:problem:<code>``) that clients can switch on.
"""

import logging
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.metrics import DATABASE_ERRORS

logger = logging.getLogger("mailprov")

PROBLEM_MEDIA_TYPE = "application/problem+json"

# The current request's id (app.middleware.RequestId), for problem documents and logs.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
TYPE_PREFIX = "urn:mailprov:problem:"


class FieldError(BaseModel):
    field: str
    location: str
    message: str


class ProblemDetail(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "urn:mailprov:problem:validation", "title": "Invalid input",
                 "status": 422, "detail": "password: must not contain control characters",
                 "instance": "/mailboxes",
                 "errors": [{"field": "password", "location": "body",
                             "message": "must not contain control characters"}]},
            ]
        }
    )  # fmt: skip

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = Field(
        default=None, description="Also in the X-Request-ID header; quote it in a report."
    )
    errors: list[FieldError] | None = None


class Problem(Exception):
    status = 400
    code = "bad-request"
    title = "Bad request"
    # Nothing happened and trying again later may succeed (frees an Idempotency-Key).
    retryable = False

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        location: str = "body",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.location = location
        self.headers = headers or {}


class NotFound(Problem):
    status, code, title = 404, "not-found", "Not found"


class DomainNotFound(NotFound):
    code, title = "domain-not-found", "Domain not found"


class MailboxNotFound(NotFound):
    code, title = "mailbox-not-found", "Mailbox not found"


class AliasNotFound(NotFound):
    code, title = "alias-not-found", "Alias not found"


class Forbidden(Problem):
    status, code, title = 403, "forbidden", "Forbidden"


class Conflict(Problem):
    status, code, title = 409, "conflict", "Conflict"


class DomainExists(Conflict):
    code, title = "domain-exists", "Domain already exists"


class MailboxExists(Conflict):
    code, title = "mailbox-exists", "Mailbox already exists"


class AliasExists(Conflict):
    code, title = "alias-exists", "Alias already exists"


class DestinationExists(Conflict):
    code, title = "destination-exists", "Destination already present"


class DomainNotEmpty(Conflict):
    code, title = "domain-not-empty", "Domain still has mailboxes or aliases"


class StillReferenced(Conflict):
    code, title = "still-referenced", "Address is still an alias destination"


class LastDestination(Conflict):
    code, title = "last-destination", "An alias needs at least one destination"


class UnsupportedMediaType(Problem):
    status, code, title = 415, "unsupported-media-type", "Unsupported media type"


class Unprocessable(Problem):
    status, code, title = 422, "validation", "Invalid input"


class DomainNotHosted(Unprocessable):
    code, title = "domain-not-hosted", "Domain is not hosted here"


class UnknownDestination(Unprocessable):
    code, title = "unknown-destination", "Local destination does not exist"


class AliasLoop(Unprocessable):
    code, title = "alias-loop", "Alias would loop"


class InvalidCursor(Unprocessable):
    code, title = "invalid-cursor", "Invalid pagination cursor"


def problem_body(problem: Problem, instance: str) -> dict[str, Any]:
    """The document a Problem is answered with."""
    errors = None
    if problem.field is not None:
        errors = [
            FieldError(field=problem.field, location=problem.location, message=problem.detail)
        ]
    return ProblemDetail(
        type=TYPE_PREFIX + problem.code,
        title=problem.title,
        status=problem.status,
        detail=problem.detail,
        instance=instance,
        request_id=request_id.get(),
        errors=errors,
    ).model_dump(exclude_none=True)


def problem_response(
    request: Request,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ProblemDetail(
        type=TYPE_PREFIX + code,
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        request_id=request_id.get(),
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    errors = []
    for err in exc.errors():
        location, *path = [str(part) for part in err.get("loc", ())] or ["body"]
        message = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        # Never echo the input: it may be a password.
        errors.append(
            FieldError(field=".".join(path) or location, location=location, message=message)
        )
    return errors


_STATUS_CODES = {
    404: ("route-not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(request.url.path) and route.methods:
            methods |= route.methods
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return JSONResponse(
            problem_body(exc, request.url.path),
            status_code=exc.status,
            media_type=PROBLEM_MEDIA_TYPE,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return problem_response(
                request,
                status=400,
                code="malformed-json",
                title="Malformed JSON",
                detail="The request body is not valid JSON.",
            )
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return problem_response(
            request,
            status=422,
            code="validation",
            title="Invalid input",
            detail=detail,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _STATUS_CODES.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route matches {request.url.path}."
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}."
            # Every method the path has, not only those of the first route that matched.
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return problem_response(
            request,
            status=exc.status_code,
            code=code,
            title=title,
            detail=detail,
            headers=headers,
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        # A concurrent request won a uniqueness or reference race; the transaction rolled back.
        return problem_response(
            request,
            status=409,
            code="conflict",
            title="Conflict",
            detail="A concurrent change conflicts with this request; nothing was changed.",
        )

    def unavailable(request: Request, detail: str, retry_after: int) -> JSONResponse:
        return problem_response(
            request,
            status=503,
            code="database-unavailable",
            title="Database unavailable",
            detail=detail,
            headers={"Retry-After": str(retry_after)},
        )

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(request: Request, exc: PoolTimeout) -> JSONResponse:
        logger.warning("database connection pool exhausted")
        DATABASE_ERRORS.labels("pool-exhausted").inc()
        return unavailable(request, "Every database connection is busy; retry shortly.", 1)

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: OperationalError) -> JSONResponse:
        # Connection-level failures: the database is down or unreachable.
        logger.warning("database unavailable: %s", type(exc.orig).__name__)
        DATABASE_ERRORS.labels("unavailable").inc()
        return unavailable(request, "The database cannot be reached; retry shortly.", 5)

    @app.exception_handler(DBAPIError)
    async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        logger.error("database error: %s", type(exc.orig).__name__)
        DATABASE_ERRORS.labels("error").inc()
        return problem_response(
            request,
            status=503,
            code="database-error",
            title="Database error",
            detail="The database could not complete the request; nothing was changed.",
            headers={"Retry-After": "1"},
        )


def problem_responses(*statuses: int, guarded: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the problem documents a route can answer.

    Every route touches the database, so 503 is always among them; every guarded
    route can answer 401 (no or bad key) and 429 (too many failed keys)."""
    if guarded:
        statuses = (*statuses, 401, 429)
    descriptions = {
        400: "Malformed request body",
        404: "Not found",
        401: "No valid API key: missing, malformed, unknown, revoked or expired",
        403: "The key does not allow this",
        409: "Conflict with the current state",
        413: "Message too big",
        429: "Too many failed authentications from this address; see `Retry-After`",
        502: "The submission server failed or could not be trusted",
        504: "The submission server did not answer in time",
        415: "Request body is not application/json",
        422: "Invalid input; `errors` names each offending field",
        503: "Database unavailable; retry after `Retry-After` seconds",
    }
    return {
        status: {
            "model": ProblemDetail,
            "description": descriptions.get(status, "Error"),
            "content": {PROBLEM_MEDIA_TYPE: {}},
        }
        for status in sorted({*statuses, 503})
    }
