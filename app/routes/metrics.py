"""GET /metrics: Prometheus' text format.

Not in the OpenAPI document: it is for Prometheus, not for API clients. With
``MAILPROV_METRICS=key`` (the default) a scrape needs an admin key — make a
read-only one for Prometheus (``mailprov keys create --name prometheus --admin
--read-only``) and give it as ``authorization: {credentials: ...}`` in the scrape
config. ``open`` serves it to anyone; ``off`` does not serve it.
"""

from fastapi import APIRouter
from fastapi.responses import Response

from app.auth import ADMIN
from app.metrics import CONTENT_TYPE, exposition


def _metrics() -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE)


def router(mode: str) -> APIRouter:
    """The route for ``MAILPROV_METRICS=mode`` (empty when off)."""
    router = APIRouter()
    if mode != "off":
        dependencies = [ADMIN] if mode == "key" else []
        router.add_api_route(
            "/metrics", _metrics, methods=["GET"], include_in_schema=False,
            dependencies=dependencies,
        )  # fmt: skip
    return router
