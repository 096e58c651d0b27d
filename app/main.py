"""The ASGI application."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI

from app import __version__
from app.config import Settings
from app.db import create_db_engine
from app.deps import require_json_body
from app.errors import install_error_handlers
from app.migrate import schema_head
from app.openapi import install_openapi
from app.routes import aliases, domains, health, mailboxes

DESCRIPTION = """
The management plane of an ISPmail-style Postfix + Dovecot server: domains,
mailboxes and aliases in the tables Postfix and Dovecot read.

Every error is an RFC 9457 `application/problem+json` document whose `type`
(`urn:mailprov:problem:<code>`) is stable. Lists are paginated by cursor.
Postfix and Dovecot cache lookups, so a change can take a short while to be seen.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = create_db_engine(
        settings.DATABASE_URL,
        connect_timeout=settings.DATABASE_CONNECT_TIMEOUT,
        pool_size=settings.DATABASE_POOL_SIZE,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="mailprov",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.schema_head = schema_head()
    install_error_handlers(app)

    # Everything but health goes through this router, so one dependency can guard it all.
    api = APIRouter(dependencies=[Depends(require_json_body)])
    api.include_router(domains.router)
    api.include_router(mailboxes.router)
    api.include_router(aliases.router)
    app.include_router(health.router)
    app.include_router(api)
    install_openapi(app)
    return app
