"""Telemetry query parameters and raw-window responses (series results: fleet_server.telemetry_queries)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fleet_server.api.schemas.common import PageQuery, StrictModel, UtcDatetime
from fleet_server.api.schemas.devices import DeviceId, HardwareClass
from telemetry.wire import MODEL_NAME_PATTERN, U32_MAX

ModelNameParam = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]
TagFilter = Annotated[
    str, StringConstraints(min_length=3, max_length=200, pattern=r"^[^=\x00-\x1f\x7f]+=[^\x00-\x1f\x7f]*$")
]
MAX_DEVICE_IDS = 500


class SeriesQueryParams(StrictModel):
    since: UtcDatetime | None = Field(default=None, description="Range start (default: until - 24 h).")
    until: UtcDatetime | None = Field(default=None, description="Range end, exclusive (default: now).")
    bucket_s: int = Field(default=3600, ge=1, le=366 * 86_400, description="Bucket size in seconds.")
    model: ModelNameParam | None = Field(default=None, description="Model name.")
    version: int | None = Field(default=None, ge=0, le=U32_MAX, description="Release counter; needs model.")
    device_id: list[DeviceId] = Field(
        default_factory=list, max_length=MAX_DEVICE_IDS, description="Cohort: these devices (repeatable)."
    )
    hardware_class: HardwareClass | None = Field(default=None, description="Cohort: this hardware class.")
    tag: list[TagFilter] = Field(default_factory=list, max_length=16, description="Cohort: key=value tags.")


class WindowQueryParams(PageQuery):
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None


class WindowOut(BaseModel):
    """One stored metrics window, as the device sent it (flattened; shadow fields null without shadow)."""

    model_config = ConfigDict(from_attributes=True)

    seq: int
    window_start_s: int
    window_len_s: int
    duty_cycle: float
    battery_pct: float | None
    battery_mv: int | None
    charging: bool
    est_battery_life_min: int | None
    inferences: int
    positives: int
    false_positives: int
    latency_p50_us: int
    latency_p95_us: int
    latency_max_us: int
    model_name: str
    model_version: int
    model_variant: str
    fallback_level: int
    input_feature: int
    input_hist: list[int]
    output_hist: list[int]
    nonfinite_inputs: int
    shadow_candidate_version: int | None
    shadow_samples: int | None
    shadow_agreements: int | None
    shadow_candidate_positives: int | None
    shadow_candidate_false_positives: int | None
    shadow_candidate_latency_p50_us: int | None
    shadow_candidate_latency_p95_us: int | None
    received_at: dt.datetime
