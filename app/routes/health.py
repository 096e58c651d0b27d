from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.errors import problem_response, problem_responses
from app.models import example

router = APIRouter(tags=["health"])


class Health(BaseModel):
    model_config = example({"status": "ok"})

    status: str


@router.get("/health", operation_id="health", summary="Liveness")
def health() -> Health:
    """The process is up. Touches nothing else; needs no key."""
    return Health(status="ok")


@router.get(
    "/ready",
    operation_id="ready",
    summary="Readiness",
    response_model=Health,
    responses=problem_responses(503, guarded=False),
)
def ready(request: Request) -> Any:
    """The database answers and its schema is at the revision this code expects."""
    expected = request.app.state.schema_head
    try:
        with request.app.state.engine.connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        current = None
        detail, code = "The database cannot be reached, or it was never migrated.", "not-ready"
    else:
        detail, code = f"Schema is at {current}, expected {expected}: migrate.", "schema-outdated"
    if current == expected:
        return Health(status="ready")
    return problem_response(
        request,
        status=503,
        code=code,
        title="Not ready",
        detail=detail,
        headers={"Retry-After": "5"},
    )
