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
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.location = location
        self.headers = headers or {}
        self.errors = errors


class NotFound(Problem):
    status, code, title = 404, "not-found", "Not found"


class DomainNotFound(NotFound):
    code, title = "domain-not-found", "Domain not found"


class MailboxNotFound(NotFound):
    code, title = "mailbox-not-found", "Mailbox not found"


class AliasNotFound(NotFound):
    code, title = "alias-not-found", "Alias not found"


class DkimKeyNotFound(NotFound):
    code, title = "dkim-key-not-found", "DKIM key not found"


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


class DkimKeyExists(Conflict):
    code, title = "dkim-key-exists", "DKIM selector already in use"


class DkimKeyActive(Conflict):
    code, title = "dkim-key-active", "DKIM key is the one signing"


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


class MalformedJson(Problem):
    status, code, title = 400, "malformed-json", "Malformed JSON"


class RouteNotFound(Problem):
    status, code, title = 404, "route-not-found", "Not found"


class MethodNotAllowed(Problem):
    status, code, title = 405, "method-not-allowed", "Method not allowed"


class PayloadTooLarge(Problem):
    status, code, title = 413, "payload-too-large", "Payload too large"


class HttpError(Problem):
    """Any other HTTP error the framework raises, under its own status."""

    code, title = "http-error", "HTTP error"

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, headers=headers)
        self.status = status


class Internal(Problem):
    status, code, title = 500, "internal", "Internal error"


class DatabaseUnavailable(Problem):
    status, code, title = 503, "database-unavailable", "Database unavailable"


class DatabaseError(Problem):
    status, code, title = 503, "database-error", "Database error"


class NotReady(Problem):
    status, code, title = 503, "not-ready", "Not ready"


class SchemaOutdated(NotReady):
    code = "schema-outdated"


def problem_body(problem: Problem, instance: str) -> dict[str, Any]:
    """The one problem document: every answer that is not a success is built here."""
    errors = problem.errors
    if errors is None and problem.field is not None:
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


def problem_response(problem: Problem, instance: str) -> JSONResponse:
    """The answer for ``problem``; also an ASGI app, for middleware outside FastAPI."""
    return JSONResponse(
        problem_body(problem, instance),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
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


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(request.url.path) and route.methods:
            methods |= route.methods
    return sorted(methods)


_HTTP_PROBLEMS: dict[int, type[Problem]] = {
    404: RouteNotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def _http_problem(request: Request, exc: StarletteHTTPException) -> Problem:
    kind = _HTTP_PROBLEMS.get(exc.status_code)
    detail = exc.detail if isinstance(exc.detail, str) else (kind or HttpError).title
    headers = getattr(exc, "headers", None)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route matches {request.url.path}."
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}."
        # Every method the path has, not only those of the first route that matched.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    if kind is None:
        return HttpError(exc.status_code, detail, headers)
    return kind(detail, headers=headers)


def as_problem(request: Request, exc: Exception) -> Problem:
    """The problem an exception is answered with: the one mapping, used by the
    handlers that answer and by the audit trail that records the answer."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, RequestValidationError):
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return MalformedJson("The request body is not valid JSON.")
        errors = _field_errors(exc)
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return Unprocessable(detail, errors=errors)
    if isinstance(exc, StarletteHTTPException):
        return _http_problem(request, exc)
    if isinstance(exc, IntegrityError):
        # A concurrent request won a uniqueness or reference race; the transaction rolled back.
        return Conflict("A concurrent change conflicts with this request; nothing was changed.")
    if isinstance(exc, PoolTimeout):
        return DatabaseUnavailable(
            "Every database connection is busy; retry shortly.", headers={"Retry-After": "1"}
        )
    if isinstance(exc, OperationalError):
        # Connection-level failures: the database is down or unreachable.
        return DatabaseUnavailable(
            "The database cannot be reached; retry shortly.", headers={"Retry-After": "5"}
        )
    if isinstance(exc, DBAPIError):
        return DatabaseError(
            "The database could not complete the request; nothing was changed.",
            headers={"Retry-After": "1"},
        )
    return Internal("The server failed to handle the request; nothing was changed.")


def _log_database_failure(exc: Exception) -> None:
    """Database failures are logged and counted as they are answered (not when audited)."""
    if isinstance(exc, PoolTimeout):
        logger.warning("database connection pool exhausted")
        DATABASE_ERRORS.labels("pool-exhausted").inc()
    elif isinstance(exc, OperationalError):
        logger.warning("database unavailable: %s", type(exc.orig).__name__)
        DATABASE_ERRORS.labels("unavailable").inc()
    elif isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError):
        logger.error("database error: %s", type(exc.orig).__name__)
        DATABASE_ERRORS.labels("error").inc()


# What the handlers below answer; anything else reaches app.middleware.RequestId (500).
_HANDLED = (
    Problem,
    RequestValidationError,
    StarletteHTTPException,
    IntegrityError,
    PoolTimeout,
    DBAPIError,
)


def install_error_handlers(app: FastAPI) -> None:
    async def answer(request: Request, exc: Exception) -> JSONResponse:
        _log_database_failure(exc)
        return problem_response(as_problem(request, exc), request.url.path)

    for handled in _HANDLED:
        app.add_exception_handler(handled, answer)


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
