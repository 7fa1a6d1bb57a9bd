"""/api/v1/drift: latest drift status per model version x cohort; run an evaluation now.

/api/v1/retraining-events: the retraining triggers with their webhook delivery state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fleet_server.api.deps import Operator, SessionDep, SettingsDep, Viewer, check_limit, set_audit
from fleet_server.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse, service_error
from fleet_server.api.schemas.common import Page
from fleet_server.api.schemas.drift import (
    DriftEvaluateRequest,
    DriftEvaluationOut,
    DriftQueryParams,
    DriftSnapshotOut,
    RetrainingEventOut,
    RetrainingEventQuery,
)
from fleet_server.db.base import utcnow
from fleet_server.db.drift import DriftSnapshot, RetrainingEvent
from fleet_server.drift import evaluate_all
from fleet_server.telemetry_queries import QueryError, require_model

router = APIRouter(tags=["drift"], responses=ERROR_RESPONSES)
_NOT_FOUND = {404: {"model": ErrorResponse, "description": "Unknown model or version"}}


def _check_model(session: Session, model: str | None, version: int | None) -> None:
    if version is not None and model is None:
        raise ApiError(422, "validation_error", "a version (release counter) needs the model name")
    if model is not None:
        try:
            require_model(session, model, version)
        except QueryError as exc:
            raise service_error(exc) from None


@router.get("/api/v1/drift", response_model=Page[DriftSnapshotOut], responses=_NOT_FOUND)
def get_drift(
    query: Annotated[DriftQueryParams, Query()], session: SessionDep, settings: SettingsDep, caller: Viewer
) -> Page[DriftSnapshotOut]:
    """The latest evaluation of each (model, version, cohort): status stable (PSI < 0.1) / investigate
    (0.1-0.2) / significant (> 0.2) / no_data / no_baseline, with PSI, KS and JS per input feature."""
    limit = check_limit(query.limit, settings)
    _check_model(session, query.model, query.version)
    filters = []
    if query.model is not None:
        filters.append(DriftSnapshot.model_name == query.model)
    if query.version is not None:
        filters.append(DriftSnapshot.model_version == query.version)
    if query.cohort is not None:
        filters.append(DriftSnapshot.cohort == query.cohort)
    latest = (
        select(func.max(DriftSnapshot.id).label("id"))
        .where(*filters)
        .group_by(DriftSnapshot.model_name, DriftSnapshot.model_version, DriftSnapshot.cohort)
        .subquery()
    )
    stmt = select(DriftSnapshot).join(latest, latest.c.id == DriftSnapshot.id)
    if query.status is not None:
        stmt = stmt.where(DriftSnapshot.status == query.status)
    total = int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
    rows = session.scalars(
        stmt.order_by(DriftSnapshot.model_name, DriftSnapshot.model_version.desc(), DriftSnapshot.cohort)
        .limit(limit)
        .offset(query.offset)
    ).all()
    return Page[DriftSnapshotOut].build(
        [DriftSnapshotOut.model_validate(r) for r in rows], total=total, limit=limit, offset=query.offset
    )


@router.post("/api/v1/drift/evaluate", response_model=DriftEvaluationOut, responses=_NOT_FOUND)
def post_drift_evaluate(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: Operator,
    body: Annotated[DriftEvaluateRequest | None, Body()] = None,
) -> DriftEvaluationOut:
    """Evaluate drift now (what the periodic evaluator does): snapshots, alerts, retraining events, and
    webhook delivery of pending events. Optionally one model / version and another telemetry range."""
    body = body or DriftEvaluateRequest()
    set_audit(request, "drift.evaluate", body.model, version=body.version, window_s=body.window_s)
    _check_model(session, body.model, body.version)
    summary = evaluate_all(
        session,
        settings,
        utcnow(),
        model_name=body.model,
        model_version=body.version,
        window_s=body.window_s,
    )
    return DriftEvaluationOut.model_validate(summary.as_dict())


@router.get("/api/v1/retraining-events", response_model=Page[RetrainingEventOut])
def get_retraining_events(
    query: Annotated[RetrainingEventQuery, Query()],
    session: SessionDep,
    settings: SettingsDep,
    caller: Viewer,
) -> Page[RetrainingEventOut]:
    """Retraining triggers (one per episode of a condition), newest first, with webhook delivery state."""
    limit = check_limit(query.limit, settings)
    filters = []
    if query.model is not None:
        filters.append(RetrainingEvent.model_name == query.model)
    if query.delivery_state is not None:
        filters.append(RetrainingEvent.delivery_state == query.delivery_state)
    total = int(session.scalar(select(func.count()).select_from(RetrainingEvent).where(*filters)) or 0)
    rows = session.scalars(
        select(RetrainingEvent)
        .where(*filters)
        .order_by(RetrainingEvent.id.desc())
        .limit(limit)
        .offset(query.offset)
    ).all()
    return Page[RetrainingEventOut].build(
        [RetrainingEventOut.model_validate(r) for r in rows], total=total, limit=limit, offset=query.offset
    )
