"""/api/v1/telemetry: bucketed series per version (device / cohort / time range) and raw windows."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Path, Query

from fleet_server.api.deps import SessionDep, SettingsDep, Viewer, check_limit
from fleet_server.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse, service_error
from fleet_server.api.schemas.common import Page
from fleet_server.api.schemas.devices import DeviceId
from fleet_server.api.schemas.telemetry import SeriesQueryParams, WindowOut, WindowQueryParams
from fleet_server.db.base import utcnow
from fleet_server.telemetry_queries import (
    Cohort,
    Limits,
    QueryError,
    SeriesResult,
    device_windows,
    telemetry_series,
)

router = APIRouter(prefix="/api/v1/telemetry", tags=["telemetry"], responses=ERROR_RESPONSES)
_NOT_FOUND = {404: {"model": ErrorResponse, "description": "Unknown model, version or device"}}


def parse_tags(raw: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in raw:
        key, _, value = item.partition("=")
        tags[key] = value
    return tags


@router.get("/series", response_model=SeriesResult, responses=_NOT_FOUND)
def get_series(
    query: Annotated[SeriesQueryParams, Query()], session: SessionDep, settings: SettingsDep, caller: Viewer
) -> SeriesResult:
    """Time-bucketed figures per model version: devices, windows, inferences, FP rate, mean battery,
    time-weighted duty cycle, inference-weighted p95 latency, fallback share (per level too).

    Cohort: ``device_id`` (repeatable), ``hardware_class``, ``tag=key=value`` (repeatable), combined
    as an intersection; none: every device. The range is bounded (days and number of buckets)."""
    until = query.until or utcnow()
    try:
        since = query.since or until - dt.timedelta(days=1)
    except OverflowError:
        raise ApiError(
            422, "validation_error", "until is too early to default since to one day before"
        ) from None
    cohort = Cohort(
        device_ids=tuple(query.device_id) if query.device_id else None,
        hardware_class=query.hardware_class,
        tags=parse_tags(query.tag),
    )
    try:
        return telemetry_series(
            session,
            since=since,
            until=until,
            bucket_s=query.bucket_s,
            limits=Limits.of(settings),
            model_name=query.model,
            model_version=query.version,
            cohort=cohort,
        )
    except QueryError as exc:
        raise service_error(exc) from None


@router.get("/devices/{device_id}/windows", response_model=Page[WindowOut], responses=_NOT_FOUND)
def get_device_windows(
    device_id: Annotated[DeviceId, Path(description="Device id")],
    query: Annotated[WindowQueryParams, Query()],
    session: SessionDep,
    settings: SettingsDep,
    caller: Viewer,
) -> Page[WindowOut]:
    """A device's stored metrics windows, newest first; optional range on the window start."""
    limit = check_limit(query.limit, settings)
    try:
        rows, total = device_windows(
            session, device_id, since=query.since, until=query.until, limit=limit, offset=query.offset
        )
    except QueryError as exc:
        raise service_error(exc) from None
    return Page[WindowOut].build(
        [WindowOut.model_validate(r) for r in rows], total=total, limit=limit, offset=query.offset
    )
