"""/healthz (liveness + database reachability) and /metrics (Prometheus text format)."""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from fleet_server.api.deps import SessionDep
from fleet_server.api.errors import ErrorResponse

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    schema_revision: str | None


@router.get("/healthz", response_model=Health, responses={503: {"model": ErrorResponse}})
def healthz(request: Request, session: SessionDep) -> Health | JSONResponse:
    try:
        session.execute(text("SELECT 1"))
        # On the session's own connection: a second checkout per request can exhaust the pool under load.
        revision = MigrationContext.configure(session.connection()).get_current_revision()
    except SQLAlchemyError:
        body = {
            "error": {"code": "database_unavailable", "message": "database not reachable", "details": None}
        }
        return JSONResponse(body, status_code=503)
    return Health(status="ok", database=request.app.state.engine.dialect.name, schema_revision=revision)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus exposition format: request counts and latency per route."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
