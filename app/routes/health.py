from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.errors import NotReady, SchemaOutdated, problem_responses
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
    responses=problem_responses(503, guarded=False),
)
def ready(request: Request) -> Health:
    """The database answers and its schema is at the revision this code expects."""
    expected = request.app.state.schema_head
    retry = {"Retry-After": "5"}
    try:
        with request.app.state.engine.connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        raise NotReady(
            "The database cannot be reached, or it was never migrated.", headers=retry
        ) from None
    if current != expected:
        raise SchemaOutdated(
            f"Schema is at {current}, expected {expected}: migrate.", headers=retry
        )
    return Health(status="ready")
