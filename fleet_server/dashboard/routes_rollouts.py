"""Rollouts list, one rollout's page, and its operator actions (pause / resume / roll back).

Actions call the rollout service exactly as POST /api/v1/rollouts/{id}/{action} does, and are audited
under the same action names; viewers see no buttons, and a viewer's POST is refused with 403.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Path, Request, Response
from fastapi.responses import RedirectResponse

from fleet_server.api.deps import SessionDep, set_audit
from fleet_server.auth import Role
from fleet_server.dashboard.rollout_view import rollout_page
from fleet_server.dashboard.routes_fleet import PageNo, PageSize, page_bounds
from fleet_server.dashboard.session import csrf_ok
from fleet_server.dashboard.svg_plots import Bar, bar_chart
from fleet_server.dashboard.web import PREFIX, DashboardError, DashboardRoute, ViewerDep, render, require
from fleet_server.rollout_runner import service
from fleet_server.rollout_runner.runner import command_builder
from fleet_server.rollout_runner.service import RolloutServiceError

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)

# The same id rule as the REST route.
RolloutId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")]
Action = Literal["pause", "resume", "rollback"]
StatusFilter = Literal["running", "paused", "rolled_back", "aborted", "completed", ""]
VERDICT_COLOURS = {"pass": "#2e7d32", "soft_fail": "#ef8f00", "hard_fail": "#c62828"}
NOTICES = {"pause": "Rollout paused.", "resume": "Rollout resumed.", "rollback": "Rollback ordered."}


def runner_now(request: Request) -> float:
    """The rollout clock: the runner's (simulated in the demo) when the app runs one, else wall time."""
    clock = getattr(request.app.state, "rollout_clock", None)
    return float(clock()) if callable(clock) else time.time()


def _service_error(exc: RolloutServiceError) -> DashboardError:
    titles = {404: "Not found", 409: "Conflict"}
    return DashboardError(exc.status_code, titles.get(exc.status_code, "Invalid request"), exc.message)


@router.get("/rollouts")
def rollouts(
    request: Request,
    viewer: ViewerDep,
    db: SessionDep,
    status: StatusFilter = "",
    page: PageNo = 1,
    limit: PageSize = None,
) -> Response:
    size, offset = page_bounds(request, page, limit)
    rows, total = service.list_rollouts(db, status=status or None, limit=size, offset=offset)
    pages = max(1, math.ceil(total / size))
    if page > pages:
        raise DashboardError(404, "Not found", f"page {page} is past the last page ({pages})")
    briefs = [service.rollout_brief(r) for r in rows]
    return render(
        request,
        "rollouts.html",
        viewer,
        rollouts=briefs,
        total=total,
        status=status,
        page=page,
        pages=pages,
        limit=size,
    )


@router.get("/rollouts/{rollout_id}")
def rollout(
    request: Request,
    viewer: ViewerDep,
    db: SessionDep,
    rollout_id: RolloutId,
    done: Action | None = None,
) -> Response:
    try:
        view = rollout_page(db, rollout_id, runner_now(request))
    except RolloutServiceError as exc:
        raise _service_error(exc) from None
    bars = [
        Bar(g.name, g.ratio * 100, VERDICT_COLOURS.get(g.verdict, "#8a8f98"))
        for g in view.gates
        if g.ratio is not None
    ]
    gate_plot = bar_chart(
        bars,
        title="Gate value as % of its threshold",
        value_fmt=lambda v: f"{v:.0f} %",
        label_width=130,
        empty_message="no gate with a threshold evaluated yet",
    )
    return render(
        request,
        "rollout.html",
        viewer,
        active="rollouts",
        view=view,
        d=view.detail,
        gate_plot=gate_plot,
        notice=NOTICES.get(done or ""),
    )


@router.post("/rollouts/{rollout_id}/actions/{action}")
def rollout_action(
    request: Request,
    viewer: ViewerDep,
    db: SessionDep,
    rollout_id: RolloutId,
    action: Action,
    csrf: Annotated[str, Form(max_length=200)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
    confirm: Annotated[str, Form(max_length=10)] = "",
    override_soft_failures: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    set_audit(request, f"rollout.{action}", rollout_id, via="dashboard", reason=reason)
    require(viewer, Role.operator, f"{action} a rollout")
    if not csrf_ok(viewer.session, csrf):
        raise DashboardError(403, "Forbidden", "missing or wrong CSRF token; reload the page and try again")
    if action == "rollback" and confirm != "yes":
        raise DashboardError(422, "Invalid request", "tick the confirmation box to roll back")
    override = override_soft_failures == "yes"
    if override and action != "resume":
        raise DashboardError(422, "Invalid request", "accepting soft gate failures applies to resume only")
    try:
        apply_action(
            request,
            db,
            rollout_id,
            action,
            actor=viewer.principal.name,
            reason=reason.strip(),
            override_soft_failures=override,
        )
    except RolloutServiceError as exc:
        db.rollback()
        raise _service_error(exc) from None
    db.commit()
    return RedirectResponse(f"{PREFIX}/rollouts/{rollout_id}?done={action}", status_code=303)


def apply_action(
    request: Request,
    db: SessionDep,
    rollout_id: str,
    action: str,
    *,
    actor: str,
    reason: str,
    override_soft_failures: bool = False,
) -> None:
    """What POST /api/v1/rollouts/{id}/{action} does: the service call with the runner's command builder
    (a rollback's commands go to the outbox; the leading runner publishes them)."""
    service.apply_action(
        db,
        rollout_id,
        action,
        actor=actor,
        now=runner_now(request),
        builder=command_builder(request.app.state.settings),
        reason=reason,
        override_soft_failures=override_soft_failures,
    )
