"""Rollout request/response models. Plans reuse the domain models (fleet_server/rollouts/model.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from fleet_server.api.schemas.common import PageQuery, SafeText, StrictModel
from fleet_server.rollouts.model import ControlPlan, GateConfig, SchedulePlan, StagePlan, TargetFilter

ReleaseId = SafeText(64, 1)
RolloutStatus = Literal["running", "paused", "rolled_back", "aborted", "completed"]


class RolloutCreate(StrictModel):
    release_id: ReleaseId = Field(description="The release to roll out.")
    previous_release_id: ReleaseId | None = Field(
        default=None,
        description="What a rollback returns to; default: the newest older active release of the model.",
    )
    target: TargetFilter = Field(
        default_factory=TargetFilter,
        description="hardware_classes (any of), tags (all of: 'key=value' or a bare 'key').",
    )
    stages: list[StagePlan] | None = Field(
        default=None,
        max_length=20,
        description="Explicit plan; default: canary 1 % (>= 5 devices) -> 10 % -> 50 % -> 100 %.",
    )
    shadow: bool = Field(default=False, description="Default plan only: start with a shadow stage.")
    min_soak_s: int | None = Field(default=None, ge=0, le=30 * 86400, description="Default plan only.")
    gates: GateConfig | None = Field(default=None, description="Gate thresholds for every stage.")
    control: ControlPlan | None = None
    schedule: SchedulePlan | None = None


class RolloutAction(StrictModel):
    reason: SafeText(500) = ""  # type: ignore[valid-type]
    override_soft_failures: bool = Field(
        default=False, description="resume only: accept the current stage's soft gate failures."
    )


class RolloutListQuery(PageQuery):
    status: RolloutStatus | None = None


class RolloutOut(BaseModel):
    id: str
    release_id: str
    previous_release_id: str | None
    model_name: str
    status: str
    finished: bool
    stage_index: int
    stage_name: str
    stages: int
    exposed: int
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class GateOut(BaseModel):
    name: str
    verdict: str
    value: float | None
    threshold: float | None
    reason: str
    values: dict[str, float | None]


class RolloutDetail(RolloutOut):
    stage: dict[str, Any]
    plan: list[dict[str, Any]]
    target: dict[str, Any]
    cohort: dict[str, Any] = Field(description="Group sizes from the runner's latest tick.")
    gates: list[GateOut] = Field(description="Each gate's latest value against its threshold.")
    required_sample_size: dict[str, Any] | None = Field(
        description="False-positive test: trials per group needed (n = 2(z_a/2 + z_b)^2 s^2 / d^2) and had."
    )
    exposure: dict[str, Any]
    paused_by: str | None
    decision_seq: int
    revision: int


class DecisionOut(BaseModel):
    seq: int
    at: float
    action: str
    actor: str
    stage_name: str
    status_after: str
    record: dict[str, Any] = Field(
        description="The full decision: reason, gate results with evidence, counts."
    )
