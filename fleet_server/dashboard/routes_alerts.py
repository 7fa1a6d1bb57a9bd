"""Alerts (P0–P3, unresolved first; the query of GET /api/v1/alerts) and the audit log (admins only, as
GET /api/v1/audit, through the same fleet_server.audit.list_entries)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import func, select

from fleet_server.alert_actions import list_alerts
from fleet_server.api.deps import SessionDep
from fleet_server.audit import AuditQuery, list_entries
from fleet_server.auth import Role
from fleet_server.dashboard.routes_fleet import PageNo, PageSize, page_bounds
from fleet_server.dashboard.svg_plots import Bar, bar_chart
from fleet_server.dashboard.web import PREFIX, DashboardError, DashboardRoute, ViewerDep, render, require
from fleet_server.db.alerts import SEVERITIES, AlertRow

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)

SEVERITY_COLOURS = {"P0": "#7f0000", "P1": "#c62828", "P2": "#e07b00", "P3": "#5c6b80"}
Severity = Literal["P0", "P1", "P2", "P3", ""]
AlertState = Literal["open", "acknowledged", "resolved", ""]
Outcome = Literal["ok", "denied", "rejected", "error", ""]


@router.get("/alerts")
def alerts(
    request: Request,
    viewer: ViewerDep,
    db: SessionDep,
    severity: Severity = "",
    state: AlertState = "",
    page: PageNo = 1,
    limit: PageSize = None,
) -> Response:
    size, offset = page_bounds(request, page, limit)
    rows, total = list_alerts(db, severity=severity or None, state=state or None, limit=size, offset=offset)
    pages = max(1, math.ceil(total / size))
    if page > pages:
        raise DashboardError(404, "Not found", f"page {page} is past the last page ({pages})")
    open_counts = dict.fromkeys(SEVERITIES, 0)
    for sev, n in db.execute(
        select(AlertRow.severity, func.count())
        .where(AlertRow.state != "resolved")
        .group_by(AlertRow.severity)
    ):
        open_counts[sev] = int(n)
    plot = bar_chart(
        [Bar(sev, n, SEVERITY_COLOURS[sev]) for sev, n in open_counts.items()],
        title="Unresolved alerts by severity",
    )
    return render(
        request,
        "alerts.html",
        viewer,
        rows=rows,
        total=total,
        severity=severity,
        state=state,
        page=page,
        pages=pages,
        limit=size,
        plot=plot,
        open_counts=open_counts,
    )


@router.get("/audit")
def audit_log(
    request: Request,
    viewer: ViewerDep,
    db: SessionDep,
    actor: Annotated[str, Query(max_length=100)] = "",
    action: Annotated[str, Query(max_length=100)] = "",
    outcome: Outcome = "",
    page: PageNo = 1,
    limit: PageSize = None,
) -> Response:
    require(viewer, Role.admin, "read the audit log")
    size, offset = page_bounds(request, page, limit)
    query = AuditQuery(actor=actor or None, action=action or None, outcome=outcome or None)
    rows, total = list_entries(db, query, limit=size, offset=offset)
    pages = max(1, math.ceil(total / size))
    if page > pages:
        raise DashboardError(404, "Not found", f"page {page} is past the last page ({pages})")
    return render(
        request,
        "audit.html",
        viewer,
        rows=rows,
        total=total,
        actor=actor,
        action=action,
        outcome=outcome,
        page=page,
        pages=pages,
        limit=size,
    )
