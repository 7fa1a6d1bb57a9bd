"""/api/v1/models/{name}/retraining: T* with lambda fitted from the model's telemetry.

C, Q, V are query parameters (the operator's economics, not stored): C cost of one retraining run,
Q queries per day (default: observed), V value of one accuracy point per query. See docs/drift.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from fleet_server.api.deps import SessionDep, Viewer
from fleet_server.api.errors import ERROR_RESPONSES, ErrorResponse, service_error
from fleet_server.api.schemas.drift import RetrainingQuery
from fleet_server.api.schemas.telemetry import ModelNameParam
from fleet_server.db.base import utcnow
from fleet_server.drift import RetrainingReport, retraining_report
from fleet_server.telemetry_queries import QueryError

router = APIRouter(tags=["drift"], responses=ERROR_RESPONSES)


@router.get(
    "/api/v1/models/{model_name}/retraining",
    response_model=RetrainingReport,
    responses={404: {"model": ErrorResponse, "description": "Unknown model or version"}},
)
def get_retraining(
    model_name: Annotated[ModelNameParam, Path(description="Model name")],
    query: Annotated[RetrainingQuery, Query()],
    session: SessionDep,
    caller: Viewer,
) -> RetrainingReport:
    """T* = sqrt(2 C / (Q V A0 lambda)) days, A0 and lambda fitted (least squares on ln A(t)) from the
    accuracy proxy per bucket since the release: precision 1 - FP/positives, or 1 - FP/inferences."""
    try:
        return retraining_report(
            session,
            model_name,
            now=utcnow(),
            version=query.version,
            c=query.c,
            q=query.q,
            v=query.v,
            days=query.days,
            bucket_days=query.bucket_days,
            proxy=query.proxy,
            min_count=query.min_count,
        )
    except QueryError as exc:
        raise service_error(exc) from None
