"""Telemetry plots over time: battery, duty cycle, FP rate, latency p95 per version; PSI per feature.

The series come from fleet_server.telemetry_queries (the same query as GET /api/v1/telemetry/series);
PSI comes from the drift evaluator's stored snapshots (fleet_server/drift).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select

from fleet_server.api.deps import SessionDep
from fleet_server.dashboard.fleet_summary import newest_window_start
from fleet_server.dashboard.svg_plots import Axis, Series, line_chart
from fleet_server.dashboard.web import PREFIX, DashboardError, DashboardRoute, ViewerDep, render, settings_of
from fleet_server.db import MlModel
from fleet_server.db.drift import DriftSnapshot
from fleet_server.telemetry_queries import Cohort, Limits, QueryError, SeriesResult, telemetry_series

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)

TARGET_POINTS = 60  # buckets per line by default: readable lines, cheap queries
NICE_BUCKETS_S = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_SNAPSHOTS = 500  # PSI points plotted at most (the newest)
# An empty field of the filter form means "any": the pattern admits the empty string, read as None.
ModelName = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._-]*$")]
HardwareClass = Annotated[str | None, Query(max_length=32, pattern=r"^[A-Za-z0-9._-]*$")]


def auto_bucket(range_s: int, min_bucket_s: int) -> int:
    wanted = max(math.ceil(range_s / TARGET_POINTS), min_bucket_s)
    return next((b for b in NICE_BUCKETS_S if b >= wanted), wanted)


def _line(result: SeriesResult, figure: str, scale: float = 1.0) -> list[Series]:
    out = []
    for s in result.series:
        points = []
        for p in s.points:
            value = getattr(p, figure)
            points.append((p.bucket_start.timestamp(), None if value is None else float(value) * scale))
        out.append(Series(f"{s.model_name} v{s.model_version}", points))
    return out


def _psi_series(snapshots: list[DriftSnapshot]) -> list[Series]:
    """One line per (model version, cohort, feature) from the snapshots, oldest first."""
    lines: dict[str, list[tuple[float, float | None]]] = {}
    for snap in reversed(snapshots):
        for feature in snap.features or []:
            psi = feature.get("psi")
            name = f"v{snap.model_version} {snap.cohort} f{feature.get('feature')}"
            lines.setdefault(name, []).append(
                (snap.evaluated_at.timestamp(), float(psi) if psi is not None else None)
            )
    return [Series(name, points) for name, points in sorted(lines.items())]


@router.get("/telemetry")
def telemetry(
    request: Request,
    viewer: ViewerDep,
    db: SessionDep,
    model: ModelName = None,
    hardware_class: HardwareClass = None,
    hours: Annotated[int, Query(ge=1, le=24 * 92)] = 24,
    bucket_s: Annotated[int | None, Query(ge=1, le=86_400 * 7)] = None,
) -> Response:
    model, hardware_class = model or None, hardware_class or None
    settings = settings_of(request)
    limits = Limits.of(settings)
    if hours * 3600 > limits.max_range_days * 86_400:
        raise DashboardError(422, "Invalid request", f"hours: at most {limits.max_range_days * 24}")
    # The range ends at the newest stored window, not at the wall clock: a fleet on simulated time (the
    # demo) or one that went quiet still shows its latest data.
    # Windows count in the bucket their start falls in: the range ends just after the newest start
    # (found through the window_start_s index).
    end = newest_window_start(db) or int(dt.datetime.now(dt.UTC).timestamp())
    start = end - hours * 3600
    bucket = bucket_s or auto_bucket(end - start, limits.min_bucket_s)
    cohort = Cohort(hardware_class=hardware_class)
    try:
        result = telemetry_series(
            db,
            since=dt.datetime.fromtimestamp(start, dt.UTC),
            until=dt.datetime.fromtimestamp(end + 1, dt.UTC),
            bucket_s=bucket,
            limits=limits,
            model_name=model,
            cohort=cohort,
        )
    except QueryError as exc:
        title = "Not found" if exc.status == 404 else "Invalid request"
        raise DashboardError(exc.status, title, exc.message) from None
    # The filter offers the catalog's models (the series query answers 404 for a model it does not know);
    # a DISTINCT over telemetry_windows would scan the whole table on every page view.
    models = list(db.scalars(select(MlModel.name).order_by(MlModel.name)))
    snap_stmt = select(DriftSnapshot).order_by(DriftSnapshot.evaluated_at.desc()).limit(MAX_SNAPSHOTS)
    if model is not None:
        snap_stmt = snap_stmt.where(DriftSnapshot.model_name == model)
    snapshots = list(db.scalars(snap_stmt))
    latest: dict[tuple[str, int, str], DriftSnapshot] = {}
    for snap in snapshots:
        latest.setdefault((snap.model_name, snap.model_version, snap.cohort), snap)
    time_axis = Axis("time (UTC)")
    plots = {
        "battery": line_chart(
            _line(result, "battery_pct_avg"),
            title="Mean battery level per version",
            x_axis=time_axis,
            y_axis=Axis("battery %", minimum=0, maximum=100),
        ),
        "duty_cycle": line_chart(
            _line(result, "duty_cycle", 100),
            title="Duty cycle per version",
            x_axis=time_axis,
            y_axis=Axis("duty cycle %", minimum=0),
        ),
        "fp_rate": line_chart(
            _line(result, "fp_rate", 100),
            title="False-positive rate per version",
            x_axis=time_axis,
            y_axis=Axis("false positives per 100 inferences", minimum=0),
        ),
        "latency": line_chart(
            _line(result, "latency_p95_us", 1e-3),
            title="Latency p95 per version",
            x_axis=time_axis,
            y_axis=Axis("p95 latency (ms)", minimum=0),
        ),
        "fallback": line_chart(
            _line(result, "fallback_share", 100),
            title="Time on a fallback model per version",
            x_axis=time_axis,
            y_axis=Axis("% of window time", minimum=0),
        ),
        "psi": line_chart(
            _psi_series(snapshots),
            title="PSI per input feature (drift evaluations)",
            x_axis=Axis("evaluated at (UTC)"),
            y_axis=Axis("PSI", minimum=0, maximum=0.25),
            empty_message="no drift evaluation stored yet",
        ),
    }
    return render(
        request,
        "telemetry.html",
        viewer,
        result=result,
        plots=plots,
        models=models,
        model=model,
        hardware_class=hardware_class,
        hours=hours,
        bucket_s=bucket,
        drift=sorted(latest.values(), key=lambda s: (s.model_name, -s.model_version, s.cohort)),
    )
