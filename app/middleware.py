"""ASGI middleware: a request id on every answer, metrics and the access log, and a
cap on request bodies.

Pure ASGI (not BaseHTTPMiddleware), so streaming and background work are untouched.
"""

import logging
import re
import time
import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, as_problem, problem_response, request_id
from app.metrics import LATENCY, REQUESTS

REQUEST_ID_HEADER = b"x-request-id"
# Any token is a method to HTTP; only these become metric labels (else "OTHER"), so a
# client cannot grow the number of series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SAFE_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")

logger = logging.getLogger("mailprov")
access_log = logging.getLogger("mailprov.access")


class RequestId:
    """Take a sane X-Request-ID from the caller, or make one; answer it back.

    Outermost, so it also turns an unexpected exception into a 500 problem document
    that carries the id (Starlette's own 500 sits outside every middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"")
        value = given.decode() if _SAFE_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(value)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k != REQUEST_ID_HEADER]
                message["headers"] = [*headers, (REQUEST_ID_HEADER, value.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:
                raise  # too late for an answer: the server drops the connection
            problem = as_problem(Request(scope), exc)  # what the audit trail recorded: 500
            await problem_response(problem, scope["path"])(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class Instrument:
    """Count and time every request by route template; write the access log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            elapsed = time.perf_counter() - began
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            label = method if method in METHODS else "OTHER"
            REQUESTS.labels(label, template, str(status)).inc()
            LATENCY.labels(label, template).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):  # spare the dict when it is off
                access_log.info(
                    "%s %s %d %.1fms", method, scope["path"], status, elapsed * 1000,
                    extra={"method": method, "path": scope["path"], "route": template,
                           "status": status, "duration_ms": round(elapsed * 1000, 2),
                           "client": (scope.get("client") or ("", 0))[0]},
                )  # fmt: skip


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413: by its Content-Length, or,
    for a chunked body, by reading at most ``limit`` bytes of it first."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            # The server (h11) holds the body to its declared length.
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)
            return
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = PayloadTooLarge(f"The request body is larger than {self.limit} bytes.")
        await problem_response(problem, scope["path"])(scope, receive, send)
