"""Small helpers shared by tests and the live-server harness."""

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from sqlalchemy import Engine

from app.db import open_session
from app.keys import KeyCreate, create_key, new_key_id


def make_key(engine: Engine, **spec: Any) -> str:
    """A new API key (admin unless told otherwise), straight into the database."""
    spec.setdefault("name", "test")
    spec.setdefault("admin", not spec.get("domains") and not spec.get("send_as"))
    with open_session(engine, write=True) as session:
        created = create_key(session, KeyCreate(**spec), new_key_id())
    return created.key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def api_routes(app: FastAPI) -> list[RouteContext]:
    """Every APIRoute of the app, with the paths and dependencies it is served with.

    FastAPI keeps included routers as lazy wrappers in ``app.routes``; walking the
    route contexts is what sees through them (a plain isinstance walk finds none).
    """
    routes = [
        r for r in iter_route_contexts(app.router.routes) if isinstance(r.original_route, APIRoute)
    ]
    assert routes, "no API routes found: the route walk is broken"
    return routes
