"""The ASGI application."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app import __version__
from app.audit import audit_trail, purge
from app.auth import READ
from app.checks import refuse_unsafe
from app.config import Settings
from app.db import create_db_engine, open_session
from app.deps import require_json_body
from app.errors import install_error_handlers
from app.middleware import BodyLimit, Instrument, RequestId
from app.migrate import SCHEMA_HEAD
from app.openapi import install_openapi
from app.routes import (
    aliases,
    audit,
    dkim_keys,
    dns_records,
    domains,
    health,
    keys,
    mailboxes,
    metrics,
    send,
)
from app.routes.docs import install_docs

logger = logging.getLogger("mailprov")

DESCRIPTION = """
The management plane of an ISPmail-style Postfix + Dovecot server: domains,
mailboxes and aliases in the tables Postfix and Dovecot read.

Every error is an RFC 9457 `application/problem+json` document whose `type`
(`urn:mailprov:problem:<code>`) is stable. Lists are paginated by cursor.
Postfix and Dovecot cache lookups, so a change can take a short while to be seen.
"""


def _purge_audit(engine: Engine, retention_days: int) -> None:
    """Retention at start; `mailprov audit-purge` from cron for long-running services."""
    try:
        with open_session(engine, write=True) as session:
            purge(session, retention_days)
    except SQLAlchemyError:
        logger.warning("audit retention not applied at start: database unavailable")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    for finding in refuse_unsafe(settings):  # raises in production when there are errors
        logger.warning("configuration %s", finding)
    engine = create_db_engine(
        settings.DATABASE_URL,
        connect_timeout=settings.DATABASE_CONNECT_TIMEOUT,
        pool_size=settings.DATABASE_POOL_SIZE,
        read_timeout=settings.DATABASE_READ_TIMEOUT,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(_purge_audit, engine, settings.AUDIT_RETENTION_DAYS)
        yield
        engine.dispose()

    app = FastAPI(
        title="mailprov",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by app.routes.docs from the package, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.schema_head = SCHEMA_HEAD
    install_error_handlers(app)

    # Everything but health goes through this router: a valid key first, then JSON
    # bodies only, and every change on the audit trail.
    api = APIRouter(dependencies=[READ, Depends(require_json_body), Depends(audit_trail)])
    api.include_router(domains.router)
    api.include_router(dkim_keys.router)
    api.include_router(dns_records.router)
    api.include_router(mailboxes.router)
    api.include_router(aliases.router)
    api.include_router(send.router)
    api.include_router(keys.router)
    api.include_router(audit.router)
    app.include_router(health.router)
    install_docs(app)
    # With a key, /metrics is an API route like any other (admin); else it stands apart.
    (api if settings.METRICS == "key" else app).include_router(metrics.router(settings.METRICS))
    app.include_router(api)
    install_openapi(app)
    app.add_middleware(BodyLimit, limit=settings.MAX_BODY_BYTES)
    app.add_middleware(Instrument)
    app.add_middleware(RequestId)  # outermost: every answer carries its id
    return app
