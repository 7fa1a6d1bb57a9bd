"""Telemetry as time series: per device / cohort / model version, time-bucketed in SQL.

Used by the REST API (``GET /api/v1/telemetry/series``), the dashboard and the drift evaluator. Plain
functions over a Session; every aggregate is a ``GROUP BY bucket`` in the database, never a Python loop
over windows.

* A **bucket** is ``[k * bucket_s, (k + 1) * bucket_s)`` in Unix seconds (aligned to the epoch, so the
  same bucket has the same bounds in every query); a window belongs to the bucket its start falls in.
* A **cohort** is a device set: explicit device ids (a rollout group), a hardware class, tags
  (``key=value``, all must match), or any combination (intersection). The empty cohort is every device.
* Rates are recomputed from sums, never averaged: FP rate = sum(false_positives) / sum(inferences);
  duty cycle = sum(duty_cycle x window_len_s) / sum(window_len_s) (time-weighted);
  latency p95 = inference-weighted mean of the windows' p95 (windows carry percentiles, not samples, so
  a true fleet p95 cannot be recovered; the rollout gates use the same figure); fallback share = share
  of window time at fallback level > 0, and per level.
* Ranges are bounded (``Settings.telemetry_max_range_days``, ``telemetry_max_points`` buckets,
  ``telemetry_min_bucket_s``) so one request cannot ask for an unbounded scan or answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Float, Select, case, cast, func, select
from sqlalchemy.orm import Session

from fleet_server.db.devices import Device
from fleet_server.db.ml_models import MlModel
from fleet_server.db.releases import Release
from fleet_server.db.telemetry import TelemetryWindow as W
from fleet_server.service_errors import ServiceError

COHORT_NAME_MAX = 64


class QueryError(ServiceError, ValueError):
    """A query that cannot be answered as asked; ``status_code`` is the HTTP status the API maps it to."""

    status_code = 422
    code = "validation_error"


class NotFoundError(QueryError):
    status_code = 404
    code = "not_found"


@dataclass(frozen=True)
class Limits:
    max_points: int = 2000
    max_range_days: int = 92
    min_bucket_s: int = 60

    @classmethod
    def of(cls, settings: Any) -> Limits:
        return cls(
            max_points=settings.telemetry_max_points,
            max_range_days=settings.telemetry_max_range_days,
            min_bucket_s=settings.telemetry_min_bucket_s,
        )


@dataclass(frozen=True)
class Cohort:
    """A device set; each given part narrows it (intersection). No part at all: every device."""

    device_ids: tuple[str, ...] | None = None
    hardware_class: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def everything(self) -> bool:
        return self.device_ids is None and self.hardware_class is None and not self.tags

    @property
    def needs_device_table(self) -> bool:
        return self.hardware_class is not None or bool(self.tags)

    def name(self) -> str:
        """Short stable name (alerts and snapshots keep it): all, hw:<class>, tag:k=v, devices:<hash>."""
        parts: list[str] = []
        if self.hardware_class is not None:
            parts.append(f"hw:{self.hardware_class}")
        parts.extend(f"tag:{k}={v}" for k, v in sorted(self.tags.items()))
        if self.device_ids is not None:
            digest = hashlib.sha256("\n".join(sorted(set(self.device_ids))).encode()).hexdigest()[:12]
            parts.append(f"devices:{len(set(self.device_ids))}:{digest}")
        text = ",".join(parts) or "all"
        if len(text) > COHORT_NAME_MAX:
            text = "cohort:" + hashlib.sha256(text.encode()).hexdigest()[:24]
        return text

    def where(self) -> list[Any]:
        """Conditions on ``telemetry_windows`` (and ``devices`` when :attr:`needs_device_table`)."""
        conditions: list[Any] = []
        if self.device_ids is not None:
            conditions.append(W.device_id.in_(sorted(set(self.device_ids))) if self.device_ids else False)
        if self.hardware_class is not None:
            conditions.append(Device.hardware_class == self.hardware_class)
        for key, value in self.tags.items():
            conditions.append(Device.tags[key].as_string() == value)
        return conditions

    def apply(self, stmt: Select[Any]) -> Select[Any]:
        if self.needs_device_table:
            stmt = stmt.select_from(W).join(Device, Device.id == W.device_id)
        conditions = self.where()
        return stmt.where(*conditions) if conditions else stmt


# ----------------------------------------------------------------------------- results


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class SeriesPoint(_Out):
    bucket_start: dt.datetime
    devices: int
    windows: int
    inferences: int
    positives: int
    false_positives: int
    fp_rate: float | None  # false_positives / inferences
    battery_pct_avg: float | None
    duty_cycle: float | None  # time-weighted
    latency_p95_us: float | None  # inference-weighted mean of window p95s
    latency_max_us: int | None
    fallback_share: float | None  # share of window time at fallback level > 0
    fallback_levels: dict[int, float]  # level -> share of window time


class Series(_Out):
    model_name: str
    model_version: int
    points: list[SeriesPoint]


class SeriesResult(_Out):
    since: dt.datetime
    until: dt.datetime
    bucket_s: int
    buckets: int
    cohort: str
    series: list[Series]


# ----------------------------------------------------------------------------- checks


def unix(t: dt.datetime) -> int:
    if t.tzinfo is None:
        raise QueryError("timestamps must carry a timezone (UTC)")
    return math.floor(t.timestamp())


def from_unix(s: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(s, dt.UTC)


def check_range(since: dt.datetime, until: dt.datetime, bucket_s: int, limits: Limits) -> int:
    """Validate a time range and bucket size; returns the number of buckets it spans."""
    start, end = unix(since), unix(until)
    if end <= start:
        raise QueryError(
            f"time range is empty or reversed: since {since.isoformat()} is not before until "
            f"{until.isoformat()}",
            [{"loc": "query.until", "msg": "must be after since", "type": "value_error"}],
        )
    if end - start > limits.max_range_days * 86_400:
        raise QueryError(
            f"time range of {(end - start) / 86_400:.1f} days exceeds the maximum of "
            f"{limits.max_range_days} days",
            [
                {
                    "loc": "query.since",
                    "msg": f"range at most {limits.max_range_days} days",
                    "type": "value_error",
                }
            ],
        )
    if bucket_s < limits.min_bucket_s:
        raise QueryError(
            f"bucket of {bucket_s} s is below the minimum of {limits.min_bucket_s} s",
            [{"loc": "query.bucket_s", "msg": f"must be >= {limits.min_bucket_s}", "type": "value_error"}],
        )
    buckets = (end - 1) // bucket_s - start // bucket_s + 1
    if buckets > limits.max_points:
        raise QueryError(
            f"{buckets} buckets of {bucket_s} s requested; at most {limits.max_points} points per series "
            f"(use a bucket of at least {math.ceil((end - start) / limits.max_points)} s)",
            [{"loc": "query.bucket_s", "msg": "too many points", "type": "value_error"}],
        )
    return buckets


def model_known(session: Session, model_name: str) -> bool:
    """A model the server knows: registered in the catalog or released."""
    if session.scalar(select(MlModel.id).where(MlModel.name == model_name).limit(1)) is not None:
        return True
    return session.scalar(select(Release.id).where(Release.model_name == model_name).limit(1)) is not None


def require_model(session: Session, model_name: str, version: int | None = None) -> Release | None:
    """404 unless the model is known; with a version (release counter), 404 unless it was released."""
    if not model_known(session, model_name):
        raise NotFoundError(f"no model named {model_name!r}")
    if version is None:
        return None
    release = session.scalar(
        select(Release).where(Release.model_name == model_name, Release.counter == version)
    )
    if release is None:
        raise NotFoundError(f"model {model_name!r} has no release with version (counter) {version}")
    return release


def require_devices(session: Session, device_ids: Sequence[str]) -> None:
    wanted = sorted(set(device_ids))
    if not wanted:
        return
    found = set(session.scalars(select(Device.id).where(Device.id.in_(wanted))))
    missing = [d for d in wanted if d not in found]
    if missing:
        shown = ", ".join(missing[:10]) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        raise NotFoundError(f"unknown device(s): {shown}", {"missing": missing[:100]})


# ----------------------------------------------------------------------------- series


def _ratio(num: float | None, den: float | None) -> float | None:
    return float(num) / float(den) if num is not None and den else None


def telemetry_series(
    session: Session,
    *,
    since: dt.datetime,
    until: dt.datetime,
    bucket_s: int,
    limits: Limits,
    model_name: str | None = None,
    model_version: int | None = None,
    cohort: Cohort | None = None,
) -> SeriesResult:
    """Bucketed figures per (model, version) for windows starting in ``[since, until)``."""
    cohort = cohort or Cohort()
    buckets = check_range(since, until, bucket_s, limits)
    if model_version is not None and model_name is None:
        raise QueryError(
            "a model version needs the model name", [{"loc": "query.version", "msg": "needs model"}]
        )
    if model_name is not None:
        require_model(session, model_name, model_version)
    if cohort.device_ids:
        require_devices(session, cohort.device_ids)
    start, end = unix(since), unix(until)
    bucket = (W.window_start_s - W.window_start_s % bucket_s).label("bucket")
    conditions = [W.window_start_s >= start, W.window_start_s < end]
    if model_name is not None:
        conditions.append(W.model_name == model_name)
    if model_version is not None:
        conditions.append(W.model_version == model_version)
    window_s = cast(W.window_len_s, Float)

    main = select(
        bucket,
        W.model_name,
        W.model_version,
        func.count(func.distinct(W.device_id)),
        func.count(),
        func.sum(W.inferences),
        func.sum(W.positives),
        func.sum(W.false_positives),
        func.avg(W.battery_pct),
        func.sum(W.duty_cycle * window_s),
        func.sum(window_s),
        func.sum(cast(W.latency_p95_us, Float) * cast(W.inferences, Float)),
        func.max(W.latency_max_us),
        func.sum(case((W.fallback_level > 0, window_s), else_=0.0)),
    ).where(*conditions)
    main = cohort.apply(main).group_by(bucket, W.model_name, W.model_version)
    levels = select(bucket, W.model_name, W.model_version, W.fallback_level, func.sum(window_s)).where(
        *conditions
    )
    levels = cohort.apply(levels).group_by(bucket, W.model_name, W.model_version, W.fallback_level)

    level_share: dict[tuple[int, str, int], dict[int, float]] = {}
    for b, name, version, level, secs in session.execute(levels):
        level_share.setdefault((int(b), name, int(version)), {})[int(level)] = float(secs or 0.0)

    by_series: dict[tuple[str, int], list[SeriesPoint]] = {}
    for row in session.execute(main):
        b, name, version = int(row[0]), row[1], int(row[2])
        devices, windows, inf, pos, fps, batt, active_s, total_s, p95w, lmax, fb_s = row[3:]
        shares = level_share.get((b, name, version), {})
        by_series.setdefault((name, version), []).append(
            SeriesPoint(
                bucket_start=from_unix(b),
                devices=int(devices),
                windows=int(windows),
                inferences=int(inf or 0),
                positives=int(pos or 0),
                false_positives=int(fps or 0),
                fp_rate=_ratio(fps, inf),
                battery_pct_avg=float(batt) if batt is not None else None,
                duty_cycle=_ratio(active_s, total_s),
                latency_p95_us=_ratio(p95w, inf),
                latency_max_us=int(lmax) if lmax is not None else None,
                fallback_share=_ratio(fb_s, total_s),
                fallback_levels={
                    level: secs / float(total_s) for level, secs in sorted(shares.items()) if total_s
                },
            )
        )
    series = [
        Series(model_name=name, model_version=version, points=sorted(points, key=lambda p: p.bucket_start))
        for (name, version), points in sorted(by_series.items())
    ]
    return SeriesResult(
        since=since, until=until, bucket_s=bucket_s, buckets=buckets, cohort=cohort.name(), series=series
    )


# ----------------------------------------------------------------------------- raw windows


def device_windows(
    session: Session,
    device_id: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int,
    offset: int,
) -> tuple[list[W], int]:
    """One device's stored windows, newest first (by window start, then seq); plus the total count."""
    if session.get(Device, device_id) is None:
        raise NotFoundError(f"no device {device_id!r}")
    conditions = [W.device_id == device_id]
    if since is not None and until is not None and unix(until) <= unix(since):
        raise QueryError("time range is empty or reversed: since is not before until")
    if since is not None:
        conditions.append(W.window_start_s >= unix(since))
    if until is not None:
        conditions.append(W.window_start_s < unix(until))
    total = int(session.scalar(select(func.count()).select_from(W).where(*conditions)) or 0)
    rows = list(
        session.scalars(
            select(W)
            .where(*conditions)
            .order_by(W.window_start_s.desc(), W.seq.desc())
            .limit(limit)
            .offset(offset)
        )
    )
    return rows, total


def versions_reporting(
    session: Session,
    since_s: int,
    until_s: int,
    model_name: str | None = None,
    model_version: int | None = None,
) -> list[tuple[str, int]]:
    """(model, version) pairs with windows starting in ``[since_s, until_s)``."""
    stmt = select(W.model_name, W.model_version).where(
        W.window_start_s >= since_s, W.window_start_s < until_s
    )
    if model_name is not None:
        stmt = stmt.where(W.model_name == model_name)
    if model_version is not None:
        stmt = stmt.where(W.model_version == model_version)
    return [(n, int(v)) for n, v in session.execute(stmt.distinct().order_by(W.model_name, W.model_version))]


__all__ = [
    "Cohort",
    "Limits",
    "NotFoundError",
    "QueryError",
    "Series",
    "SeriesPoint",
    "SeriesResult",
    "check_range",
    "device_windows",
    "model_known",
    "require_devices",
    "require_model",
    "telemetry_series",
    "versions_reporting",
]
