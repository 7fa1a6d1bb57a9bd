"""/api/v1/rollouts: start, list, inspect, decisions, pause / resume / abort / rollback.

Thin: every rule lives in fleet_server/rollout_runner/service.py (shared with the CLI and dashboard).
Commands decided here (a rollback) go to the outbox; the leading runner publishes them on its next tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request

from fleet_server.api.deps import Operator, SessionDep, SettingsDep, Viewer, check_limit, set_audit
from fleet_server.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse, service_error
from fleet_server.api.schemas.common import Page
from fleet_server.api.schemas.rollouts import (
    DecisionOut,
    RolloutAction,
    RolloutCreate,
    RolloutDetail,
    RolloutListQuery,
    RolloutOut,
)
from fleet_server.rollout_runner import service
from fleet_server.rollout_runner.runner import command_builder

router = APIRouter(prefix="/api/v1/rollouts", tags=["rollouts"], responses=ERROR_RESPONSES)
RolloutIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]
_NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such rollout"}}
_CONFLICT = {409: {"model": ErrorResponse, "description": "Not possible in the rollout's current state"}}
_Action = Literal["pause", "resume", "abort", "rollback"]


def _clock(request: Request) -> float:
    # The demo swaps in its simulated clock (app.state.rollout_clock); everyone else runs on wall time.
    clock: Callable[[], float] = getattr(request.app.state, "rollout_clock", time.time)
    return clock()


@router.post("", status_code=201, response_model=RolloutDetail, responses={**_CONFLICT})
def start_rollout(
    body: RolloutCreate, request: Request, session: SessionDep, caller: Operator
) -> RolloutDetail:
    """Start a rollout (status running); the runner sends the first commands on its next tick."""
    set_audit(request, "rollout.start", body.release_id, target_filter=body.target.model_dump())
    now = _clock(request)
    req = service.CreateRequest(**{k: getattr(body, k) for k in service.CreateRequest.__dataclass_fields__})
    try:
        row = service.create_rollout(session, req, actor=caller.name, now=now)
        session.commit()
    except service.RolloutServiceError as exc:
        session.rollback()
        raise service_error(exc) from None
    set_audit(request, "rollout.start", row.id, release_id=body.release_id)
    return RolloutDetail.model_validate(service.rollout_detail(session, row, now))


@router.get("", response_model=Page[RolloutOut])
def list_rollouts(
    query: Annotated[RolloutListQuery, Query()], session: SessionDep, settings: SettingsDep, caller: Viewer
) -> Page[RolloutOut]:
    """Newest first; filter by status."""
    limit = check_limit(query.limit, settings)
    rows, total = service.list_rollouts(session, status=query.status, limit=limit, offset=query.offset)
    items = [RolloutOut.model_validate(service.rollout_brief(r)) for r in rows]
    return Page[RolloutOut].build(items, total=total, limit=limit, offset=query.offset)


@router.get("/{rollout_id}", response_model=RolloutDetail, responses=_NOT_FOUND)
def get_rollout(
    rollout_id: RolloutIdPath, request: Request, session: SessionDep, caller: Viewer
) -> RolloutDetail:
    try:
        row = service.get_rollout(session, rollout_id)
    except service.RolloutServiceError as exc:
        raise service_error(exc) from None
    return RolloutDetail.model_validate(service.rollout_detail(session, row, _clock(request)))


@router.get("/{rollout_id}/decisions", response_model=Page[DecisionOut], responses=_NOT_FOUND)
def list_decisions(
    rollout_id: RolloutIdPath,
    query: Annotated[RolloutListQuery, Query()],
    session: SessionDep,
    settings: SettingsDep,
    caller: Viewer,
) -> Page[DecisionOut]:
    """Every decision in order, with its reason, actor, gate results (values, thresholds, evidence)."""
    if query.status is not None:
        raise ApiError(422, "validation_error", "status is not a filter of decisions")
    limit = check_limit(query.limit, settings)
    try:
        rows, total = service.list_decisions(session, rollout_id, limit=limit, offset=query.offset)
    except service.RolloutServiceError as exc:
        raise service_error(exc) from None
    items = [
        DecisionOut(
            seq=r.seq,
            at=r.at,
            action=r.action,
            actor=r.actor,
            stage_name=r.stage_name,
            status_after=r.status_after,
            record=r.record,
        )
        for r in rows
    ]
    return Page[DecisionOut].build(items, total=total, limit=limit, offset=query.offset)


def _action(
    action: _Action,
    rollout_id: str,
    body: RolloutAction | None,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: Operator,
) -> RolloutDetail:
    body = body or RolloutAction()
    set_audit(request, f"rollout.{action}", rollout_id, reason=body.reason)
    if body.override_soft_failures and action != "resume":
        raise ApiError(422, "validation_error", "override_soft_failures applies to resume only")
    now = _clock(request)
    try:
        row = service.apply_action(
            session,
            rollout_id,
            action,
            actor=caller.name,
            now=now,
            builder=command_builder(settings),
            reason=body.reason,
            override_soft_failures=body.override_soft_failures,
        )
        session.commit()
    except service.RolloutServiceError as exc:
        session.rollback()
        raise service_error(exc) from None
    return RolloutDetail.model_validate(service.rollout_detail(session, row, now))


_ACTION_RESPONSES = {**_NOT_FOUND, **_CONFLICT}


def _action_route(action: _Action, doc: str | None) -> Callable[..., RolloutDetail]:
    # The four routes differ only in the action: one endpoint each, named after it (OpenAPI operation
    # id and summary come from the name), the body shared in _action.
    def endpoint(
        rollout_id: RolloutIdPath,
        request: Request,
        session: SessionDep,
        settings: SettingsDep,
        caller: Operator,
        body: RolloutAction | None = None,
    ) -> RolloutDetail:
        return _action(action, rollout_id, body, request, session, settings, caller)

    endpoint.__name__ = endpoint.__qualname__ = action
    endpoint.__doc__ = doc
    return endpoint


_ACTION_DOCS: dict[_Action, str | None] = {
    "pause": None,
    "resume": None,
    "abort": None,
    "rollback": (
        "Roll back by hand: every exposed device is told to revert (immediate tier) and, if it has not by\n"
        "then, re-targeted to the previous release (rapid tier)."
    ),
}
for _name, _doc in _ACTION_DOCS.items():
    router.add_api_route(
        f"/{{rollout_id}}/{_name}",
        _action_route(_name, _doc),
        methods=["POST"],
        response_model=RolloutDetail,
        responses=_ACTION_RESPONSES,
    )
