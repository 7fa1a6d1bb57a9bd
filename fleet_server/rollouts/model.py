"""The rollout's persisted shapes: what is rolled out, to whom, in which stages, under which gates.

Every model here is a pydantic model that round-trips through JSON (``model_dump_json`` /
``model_validate_json``): the DB layer stores them as they are and rebuilds the controller's input
from them after a restart. Times are integer/float Unix seconds; fractions are 0..1.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RolloutError(ValueError):
    """A request the rollout domain refuses: bad plan, bad operator action for the current status."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ----------------------------------------------------------------------------- what and to whom


class ReleaseRef(_Model):
    """The release being rolled out and the one it replaces (what a rollback returns to)."""

    release_id: str = Field(min_length=1)
    model: str = Field(min_length=1)
    version: str = Field(min_length=1)
    counter: int = Field(ge=0)  # the manifest's monotonic counter; devices report it as ModelRef.version
    previous_release_id: str | None = None
    previous_version: str | None = None
    previous_counter: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _older_previous(self) -> ReleaseRef:
        if self.previous_counter is not None and self.previous_counter >= self.counter:
            raise ValueError(
                f"previous_counter {self.previous_counter} must be below the release counter {self.counter}"
            )
        return self


class TargetFilter(_Model):
    """Which registered devices the rollout is for. Empty ``hardware_classes``: every class;
    ``tags``: a device must carry all of them."""

    hardware_classes: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    def matches(self, hardware_class: str, tags: frozenset[str] | set[str] | list[str]) -> bool:
        if self.hardware_classes and hardware_class not in self.hardware_classes:
            return False
        return set(self.tags).issubset(tags)


# ----------------------------------------------------------------------------- gate thresholds

Verdict = Literal["pass", "soft_fail", "hard_fail", "insufficient_data"]


class InstallGateConfig(_Model):
    """Failed installs / finished installs of the cohort (hawkBit's error threshold)."""

    enabled: bool = True
    soft_max_rate: float = Field(default=0.05, ge=0, le=1)  # above: pause
    error_threshold: float = Field(default=0.20, ge=0, le=1)  # above: emergency stop (rollback)


class FalsePositiveGateConfig(_Model):
    """One-sided two-proportion z-test of the cohort's FP rate against the control's."""

    enabled: bool = True
    alpha: float = Field(default=0.05, gt=0, lt=0.5)  # the test once the required sample size is reached
    # Interim looks (every decision before the required sample size) stop early only below this
    # p-value (Haybittle-Peto boundary): repeated peeking at alpha would roll back good releases.
    early_stop_alpha: float = Field(default=0.001, gt=0, lt=0.5)
    power: float = Field(default=0.80, gt=0.5, lt=1)
    # delta (minimum detectable increase) = max(min_detectable_abs, min_detectable_rel * control rate)
    min_detectable_abs: float = Field(default=0.002, gt=0, lt=1)
    min_detectable_rel: float = Field(default=0.25, ge=0)
    # "inferences": false wakes per inference (Bernoulli per inference); "positives": FP share of positives
    per: Literal["inferences", "positives"] = "inferences"
    min_trials: int = Field(default=200, ge=1)  # below this in either group nothing is concluded
    # A significant increase smaller than delta: pause (True) or pass with a note (False, the default).
    soft_fail_below_delta: bool = False


class RelativeGateConfig(_Model):
    """Cohort mean vs control mean: bounded relative increase."""

    enabled: bool = True
    soft_max_increase: float = Field(default=0.10, ge=0)  # +10 %: pause
    hard_max_increase: float = Field(default=0.50, ge=0)  # +50 %: roll back
    min_devices: int = Field(default=3, ge=1)  # devices with a figure, in each group


class LatencyGateConfig(_Model):
    """Absolute p95 budget in microseconds, per hardware class where given."""

    enabled: bool = True
    budget_us: float | None = Field(default=None, gt=0)  # None and no per-class budget: gate passes
    per_class_budget_us: dict[str, float] = Field(default_factory=dict)
    hard_factor: float = Field(default=2.0, ge=1)  # p95 above hard_factor x budget: roll back


class FallbackGateConfig(_Model):
    """Share of reporting cohort devices that fell back to a lower step of their fallback chain."""

    enabled: bool = True
    soft_max_share: float = Field(default=0.05, ge=0, le=1)
    hard_max_share: float = Field(default=0.20, ge=0, le=1)


class DriftGateConfig(_Model):
    """PSI of the cohort's summed input histogram vs the converter baseline (telemetry.drift)."""

    enabled: bool = True
    soft_max_psi: float = Field(default=0.2, ge=0)  # chapter: PSI > 0.2 significant shift
    min_samples: int = Field(default=500, ge=1)


class ServingErrorGateConfig(_Model):
    """Runtime errors (invoke failures, null / non-finite outputs) per inference: the P0 signal."""

    enabled: bool = True
    soft_max_rate: float = Field(default=1e-4, ge=0)
    hard_max_rate: float = Field(default=1e-3, ge=0)


class GateConfig(_Model):
    install: InstallGateConfig = Field(default_factory=InstallGateConfig)
    false_positive: FalsePositiveGateConfig = Field(default_factory=FalsePositiveGateConfig)
    battery_drain: RelativeGateConfig = Field(default_factory=RelativeGateConfig)
    duty_cycle: RelativeGateConfig = Field(default_factory=RelativeGateConfig)
    latency: LatencyGateConfig = Field(default_factory=LatencyGateConfig)
    fallback: FallbackGateConfig = Field(default_factory=FallbackGateConfig)
    drift: DriftGateConfig = Field(default_factory=DriftGateConfig)
    serving_errors: ServingErrorGateConfig = Field(default_factory=ServingErrorGateConfig)


# ----------------------------------------------------------------------------- stages and rollout

StageKind = Literal["shadow", "rollout"]


class StagePlan(_Model):
    """One stage. The cohort is cumulative: the devices with the lowest hash points, at least
    ``fraction`` of the eligible non-control devices and at least ``min_devices`` of them.
    A shadow stage runs the candidate beside the current model on its cohort without acting on it."""

    name: str = Field(min_length=1)
    kind: StageKind = "rollout"
    fraction: float = Field(gt=0, le=1)
    min_devices: int = Field(default=1, ge=1)
    min_soak_s: int = Field(default=3600, ge=0)
    min_reporting_devices: int = Field(default=1, ge=1)
    gates: GateConfig = Field(default_factory=GateConfig)


class ControlPlan(_Model):
    """The control group: eligible devices held back on the previous version until the rollout
    completes, chosen by a second hash (control point < ``fraction``, at least ``min_devices``)."""

    fraction: float = Field(default=0.05, ge=0, lt=1)
    min_devices: int = Field(default=20, ge=0)


class SchedulePlan(_Model):
    """How fast update commands go out (see scheduling.py)."""

    devices_per_minute: float = Field(default=600.0, gt=0)
    burst: int = Field(default=100, ge=1)  # most commands in one decision after an idle period
    min_battery_pct: float = Field(default=20.0, ge=0, le=100)  # below and not charging: deferred


def default_stages(shadow: bool = False, min_soak_s: int = 3600) -> list[StagePlan]:
    """Optional shadow, then canary 1 % (>= 5 devices) -> 10 % -> 50 % -> 100 %.

    ``min_reporting_devices`` (5, 10, 20, 20) is what a large fleet must show; the controller asks for at
    most the stage's cohort size (``controller.required_reporting``), so a 50-device fleet, whose 10 %
    stage guarantees only its 5-device floor, advances once those 5 report instead of holding forever."""
    stages = [
        StagePlan(
            name="canary", fraction=0.01, min_devices=5, min_soak_s=min_soak_s, min_reporting_devices=5
        ),
        StagePlan(name="10%", fraction=0.10, min_devices=5, min_soak_s=min_soak_s, min_reporting_devices=10),
        StagePlan(name="50%", fraction=0.50, min_devices=5, min_soak_s=min_soak_s, min_reporting_devices=20),
        StagePlan(name="100%", fraction=1.0, min_devices=5, min_soak_s=min_soak_s, min_reporting_devices=20),
    ]
    if shadow:
        shadow_gates = GateConfig(
            install=InstallGateConfig(enabled=False),
            battery_drain=RelativeGateConfig(enabled=False),
            duty_cycle=RelativeGateConfig(enabled=False),
            fallback=FallbackGateConfig(enabled=False),
        )
        stages.insert(
            0,
            StagePlan(
                name="shadow",
                kind="shadow",
                fraction=0.01,
                min_devices=5,
                min_soak_s=min_soak_s,
                min_reporting_devices=5,
                gates=shadow_gates,
            ),
        )
    return stages


class RolloutSpec(_Model):
    rollout_id: str = Field(min_length=1, max_length=128)
    release: ReleaseRef
    target: TargetFilter = Field(default_factory=TargetFilter)
    stages: list[StagePlan] = Field(default_factory=default_stages, min_length=1)
    control: ControlPlan = Field(default_factory=ControlPlan)
    schedule: SchedulePlan = Field(default_factory=SchedulePlan)
    created_at: float = Field(ge=0)

    @model_validator(mode="after")
    def _plan(self) -> RolloutSpec:
        rollout = [s for s in self.stages if s.kind == "rollout"]
        if not rollout:
            raise ValueError("a rollout needs at least one stage of kind 'rollout'")
        if self.stages[-1].kind != "rollout" or self.stages[-1].fraction != 1.0:
            raise ValueError("the last stage must be a rollout stage with fraction 1.0")
        if any(s.kind == "shadow" for s in self.stages[1:]):
            raise ValueError("a shadow stage may only come first")
        for a, b in itertools.pairwise(rollout):
            if b.fraction < a.fraction or b.min_devices < a.min_devices:
                raise ValueError(
                    f"stage {b.name!r} is smaller than the stage before it; cohorts are cumulative"
                )
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError("stage names must be unique")
        return self


# ----------------------------------------------------------------------------- results and records


class GateResult(_Model):
    name: str
    verdict: Verdict
    value: float | None = None  # the headline figure (rate, relative increase, PSI, ...)
    threshold: float | None = None  # the bound the verdict was taken against
    values: dict[str, float | None] = Field(default_factory=dict)  # other figures (control value, z, n)
    evidence: dict[str, Any] = Field(default_factory=dict)  # counts, thresholds, what was compared
    reason: str = ""


CommandKind = Literal["update", "shadow_on", "shadow_off", "retarget", "revert"]


class Command(_Model):
    """What the server must send. The wiring layer turns these into MQTT commands
    (telemetry.schemas.UpdateAvailable / Rollback / SetShadowMode) with URLs and hashes.

    ``tier`` is the chapter's rollback tier: "immediate" (device reverts to its other slot, < 1 min),
    "rapid" (server re-targets the cohort to the previous release, < 15 min)."""

    kind: CommandKind
    device_ids: list[str]
    release_id: str  # the release the command is about (the candidate, or the previous one for retarget)
    target_counter: int | None = None
    tier: Literal["immediate", "rapid"] | None = None
    reason: str = ""


DecisionAction = Literal["start", "hold", "advance", "pause", "resume", "abort", "rollback", "complete"]
Actor = str  # "controller" or the operator's name / token subject


class DecisionRecord(_Model):
    """One stored decision: what, why, on which evidence, by whom."""

    rollout_id: str
    seq: int = Field(ge=1)
    at: float
    action: DecisionAction
    actor: Actor
    stage_index: int
    stage_name: str
    status_before: str
    status_after: str
    reason: str
    gate_results: list[GateResult] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)


RolloutStatus = Literal["running", "paused", "rolled_back", "aborted", "completed"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"rolled_back", "aborted"})


class RolloutState(_Model):
    """Everything the controller needs besides the fleet and its telemetry; stored after each decision."""

    spec: RolloutSpec
    status: RolloutStatus = "running"
    stage_index: int = 0
    stage_started_at: float
    decision_seq: int = 0
    # Devices ever commanded to install the candidate (exposure accounting), in command order.
    exposed: list[str] = Field(default_factory=list)
    shadowed: list[str] = Field(default_factory=list)  # devices told to run the candidate in shadow
    reverted: list[str] = Field(default_factory=list)  # devices commanded back by a rollback
    # Token bucket of the command scheduler.
    schedule_tokens: float = 0.0
    schedule_updated_at: float
    last_hold_reason: str | None = None  # a hold is recorded again only when its reason changes
    last_gate_results: list[GateResult] = Field(default_factory=list)  # the latest evaluation (for the API)
    paused_by: str | None = None
    rolled_back_at: float | None = None  # when the rollback was decided (for time-to-recovery)
    soft_override_stage: int | None = None  # stage whose soft gate failures an operator chose to accept

    @property
    def stage(self) -> StagePlan:
        return self.spec.stages[self.stage_index]


class ExposureReport(_Model):
    """Who got the candidate, and after a rollback who still runs it (the rollback is done when none)."""

    ever_exposed: int
    reverted: int
    still_on_candidate: list[str]  # exposed devices whose last report still shows the candidate
    unknown: list[str]  # exposed devices without a report
    rolled_back_at: float | None
    recovered: bool  # rolled back and every exposed device reports another version


class Outcome(_Model):
    """What one controller step produced: the state to store, new decision records, commands to send."""

    state: RolloutState
    decisions: list[DecisionRecord] = Field(default_factory=list)
    commands: list[Command] = Field(default_factory=list)
