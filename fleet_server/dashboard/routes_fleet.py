"""Fleet overview: devices by hardware class, by running version, by health; the devices table (paged)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from fleet_server.api.deps import SessionDep
from fleet_server.dashboard.fleet_summary import (
    HealthThresholds,
    device_page,
    fleet_counts,
    newest_window_start,
)
from fleet_server.dashboard.svg_plots import Bar, bar_chart
from fleet_server.dashboard.web import PREFIX, DashboardError, DashboardRoute, ViewerDep, render, settings_of
from fleet_server.settings import HARD_MAX_PAGE_SIZE

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)

HEALTH_COLOURS = {"ok": "#2e7d32", "stale": "#ef8f00", "offline": "#c62828", "never_seen": "#8a8f98"}
BATTERY_COLOURS = ("#c62828", "#ef8f00", "#7cb342", "#2e7d32", "#8a8f98")

PageNo = Annotated[int, Query(ge=1, le=1_000_000, description="1-based page number")]
PageSize = Annotated[int | None, Query(ge=1, le=HARD_MAX_PAGE_SIZE)]


def page_bounds(request: Request, page: int, limit: int | None) -> tuple[int, int]:
    """(limit, offset) within the configured page size bounds, like the REST API's check_limit."""
    settings = settings_of(request)
    limit = settings.page_size_default if limit is None else limit
    if limit > settings.page_size_max:
        raise DashboardError(
            422, "Invalid request", f"limit {limit} exceeds the maximum page size {settings.page_size_max}"
        )
    return limit, (page - 1) * limit


@router.get("")
def overview(
    request: Request, viewer: ViewerDep, db: SessionDep, page: PageNo = 1, limit: PageSize = None
) -> Response:
    settings = settings_of(request)
    limits = HealthThresholds(settings.dashboard_stale_after_s, settings.dashboard_offline_after_s)
    now = dt.datetime.now(dt.UTC)
    size, offset = page_bounds(request, page, limit)
    newest = newest_window_start(db)
    since_s = (newest if newest is not None else int(now.timestamp())) - settings.dashboard_battery_lookback_s
    counts = fleet_counts(db, now, limits, since_s=since_s)
    pages = max(1, math.ceil(counts.total / size))
    if page > pages:
        raise DashboardError(404, "Not found", f"page {page} is past the last page ({pages})")
    rows = device_page(db, now, limits, since_s=since_s, limit=size, offset=offset)
    plots = {
        "by_class": bar_chart(
            [Bar(name, n) for name, n in counts.by_class], title="Devices by hardware class"
        ),
        "by_version": bar_chart(
            [Bar(name, n, "#009E73") for name, n in counts.by_version], title="Devices by running version"
        ),
        "by_health": bar_chart(
            [Bar(name.replace("_", " "), n, HEALTH_COLOURS[name]) for name, n in counts.by_health.items()],
            title="Devices by last-seen health",
        ),
        "battery": bar_chart(
            [Bar(name, n, c) for (name, n), c in zip(counts.battery, BATTERY_COLOURS, strict=True)],
            title="Latest battery level",
        ),
    }
    return render(
        request,
        "overview.html",
        viewer,
        counts=counts,
        rows=rows,
        plots=plots,
        page=page,
        pages=pages,
        limit=size,
        limits=limits,
    )
