"""Drift status, evaluation requests, retraining events and the T* query."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet_server.api.schemas.common import PageQuery, SafeText, StrictModel
from fleet_server.api.schemas.telemetry import ModelNameParam
from telemetry.wire import U32_MAX

DriftStatusName = Literal["stable", "investigate", "significant", "no_data", "no_baseline"]


class DriftQueryParams(PageQuery):
    model: ModelNameParam | None = None
    version: int | None = Field(default=None, ge=0, le=U32_MAX, description="Release counter; needs model.")
    cohort: SafeText(64, 1) | None = Field(default=None, description="all, hw:<class>, ...")  # type: ignore[valid-type]
    status: DriftStatusName | None = None


class FeatureDriftOut(BaseModel):
    feature: int
    status: str
    psi: float | None
    ks: float | None
    js: float | None
    samples: float


class DriftSnapshotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    model_name: str
    model_version: int
    release_id: str | None
    cohort: str
    range_start: dt.datetime
    range_end: dt.datetime
    evaluated_at: dt.datetime
    status: DriftStatusName
    max_psi: float | None
    alert: bool = Field(description="Some feature with PSI > 0.2 (alert and retraining trigger).")
    devices: int
    windows: int
    samples: int
    features: list[FeatureDriftOut]
    note: str


class DriftEvaluateRequest(StrictModel):
    model: ModelNameParam | None = None
    version: int | None = Field(default=None, ge=0, le=U32_MAX, description="Release counter; needs model.")
    window_s: int | None = Field(
        default=None,
        ge=60,
        le=90 * 86_400,
        description="Telemetry range (default: the server's drift window).",
    )


class GroupOutcomeOut(BaseModel):
    model_name: str
    model_version: int
    cohort: str
    status: str
    snapshot_id: int | None
    alerts_raised: list[int]
    alerts_refreshed: list[int]
    alerts_resolved: int
    event_id: int | None
    event_created: bool


class DriftEvaluationOut(BaseModel):
    at: dt.datetime
    range_start: dt.datetime
    range_end: dt.datetime
    groups: list[GroupOutcomeOut]
    skipped: list[str]
    deliveries: dict[str, int]


class RetrainingEventQuery(PageQuery):
    model: ModelNameParam | None = None
    delivery_state: Literal["pending", "delivered"] | None = None


class RetrainingEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_uid: str
    model_name: str
    model_version: int
    cohort: str
    reasons: list[str]
    evidence: dict[str, Any]
    created_at: dt.datetime
    last_seen_at: dt.datetime
    count: int
    cleared_at: dt.datetime | None
    delivery_state: Literal["pending", "delivered"]
    attempts: int
    next_attempt_at: dt.datetime
    last_attempt_at: dt.datetime | None
    last_error: str | None
    delivered_at: dt.datetime | None
    delivered_to: str | None


class RetrainingQuery(StrictModel):
    """C, Q, V: the operator's economics (all > 0, finite); Q defaults to the observed inferences per day."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    c: float | None = Field(default=None, gt=0, description="C: cost of one retraining run.")
    q: float | None = Field(default=None, gt=0, description="Q: queries per day (default: observed).")
    v: float | None = Field(default=None, gt=0, description="V: value of one accuracy point per query.")
    version: int | None = Field(
        default=None, ge=0, le=U32_MAX, description="Release counter (default: latest)."
    )
    days: float = Field(
        default=30.0, gt=0, le=3660, description="Fit over the last N days (since the release)."
    )
    bucket_days: float = Field(default=1.0, ge=1 / 24, le=365, description="One proxy point per bucket.")
    proxy: Literal["precision", "false_wake"] = "precision"
    min_count: int = Field(
        default=50, ge=1, le=10_000_000, description="Counts a bucket needs to be a point."
    )
