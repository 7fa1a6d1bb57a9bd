"""/api/v1/alerts: list (filters, paginated), acknowledge, resolve."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request
from sqlalchemy.orm import Session

from fleet_server.alert_actions import AlertActionError, acknowledge, list_alerts, resolve
from fleet_server.api.deps import Operator, SessionDep, SettingsDep, Viewer, check_limit, set_audit
from fleet_server.api.errors import ERROR_RESPONSES, ErrorResponse, service_error
from fleet_server.api.schemas.alerts import AlertAction, AlertOut, AlertQueryParams
from fleet_server.api.schemas.common import MAX_INT_ID, Page
from fleet_server.auth import OperatorPrincipal

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=ERROR_RESPONSES)
AlertIdPath = Annotated[int, Path(ge=1, le=MAX_INT_ID, description="Alert id")]
_ACTION = {
    404: {"model": ErrorResponse, "description": "No such alert"},
    409: {"model": ErrorResponse, "description": "The alert is not in a state that allows this"},
}


@router.get("", response_model=Page[AlertOut])
def get_alerts(
    query: Annotated[AlertQueryParams, Query()], session: SessionDep, settings: SettingsDep, caller: Viewer
) -> Page[AlertOut]:
    """Alerts, unresolved first, then by severity (P0 first), newest first."""
    limit = check_limit(query.limit, settings)
    rows, total = list_alerts(
        session,
        severity=query.severity,
        state=query.state,
        model_name=query.model,
        code=query.code,
        limit=limit,
        offset=query.offset,
    )
    return Page[AlertOut].build(
        [AlertOut.model_validate(r) for r in rows], total=total, limit=limit, offset=query.offset
    )


def _act(
    action: str,
    alert_id: int,
    body: AlertAction | None,
    request: Request,
    session: Session,
    caller: OperatorPrincipal,
) -> AlertOut:
    note = body.note if body is not None else None
    set_audit(request, f"alert.{action}", str(alert_id), note=note)
    fn = acknowledge if action == "acknowledge" else resolve
    try:
        row = fn(session, alert_id, by=caller.name, note=note)
    except AlertActionError as exc:
        session.rollback()
        raise service_error(exc) from None
    session.commit()
    return AlertOut.model_validate(row)


@router.post("/{alert_id}/ack", response_model=AlertOut, responses=_ACTION)
def ack_alert(
    alert_id: AlertIdPath,
    request: Request,
    session: SessionDep,
    caller: Operator,
    body: Annotated[AlertAction | None, Body()] = None,
) -> AlertOut:
    """Acknowledge an open alert (someone is on it); an optional note is kept with the alert."""
    return _act("acknowledge", alert_id, body, request, session, caller)


@router.post("/{alert_id}/resolve", response_model=AlertOut, responses=_ACTION)
def resolve_alert(
    alert_id: AlertIdPath,
    request: Request,
    session: SessionDep,
    caller: Operator,
    body: Annotated[AlertAction | None, Body()] = None,
) -> AlertOut:
    """Resolve an alert by hand (a condition that returns opens a new one)."""
    return _act("resolve", alert_id, body, request, session, caller)
