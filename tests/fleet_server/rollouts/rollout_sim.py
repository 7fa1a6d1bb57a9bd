"""A small simulated fleet for the rollout scenario tests: devices emit real telemetry messages
(telemetry.schemas MetricsWindow / OtaStatus / ErrorEvent) whose figures are drawn from per-version
behaviours; the controller sees them only through DeviceTotals.from_windows, as the server will."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from converters.baselines import bin_counts, histogram, quantile_edges
from fleet_server.rollouts import (
    DeviceInfo,
    DeviceTotals,
    FleetView,
    Outcome,
    ReleaseRef,
    RolloutSpec,
    RolloutState,
    decide,
    default_stages,
    start_rollout,
)
from fleet_server.rollouts.model import ControlPlan, SchedulePlan
from telemetry.schemas import ErrorEvent, MetricsWindow, ModelRef, OtaStatus

MODEL = "kws"
PREV, CAND = 6, 7
T0 = 1_700_000_000
WINDOW_S = 900
RELEASE = ReleaseRef(
    release_id="rel-kws-7",
    model=MODEL,
    version="1.7.0",
    counter=CAND,
    previous_release_id="rel-kws-6",
    previous_version="1.6.0",
    previous_counter=PREV,
)


@dataclass(frozen=True)
class Behaviour:
    """How a model version behaves on a device, per inference / per window."""

    fp_rate: float = 0.005  # false wakes per inference
    positive_rate: float = 0.03
    latency_p95_us: int = 20_000
    duty_cycle: float = 0.02
    drain_pct_per_h: float = 4.0
    fallback_prob: float = 0.0  # per window
    error_rate: float = 0.0  # serving errors per inference
    input_shift: float = 0.0  # mean shift of the input feature (drift)


@dataclass
class SimFleet:
    n: int = 500
    seed: int = 1
    inferences_per_window: int = 900
    install_fail_prob: float = 0.0
    previous: Behaviour = field(default_factory=Behaviour)
    candidate: Behaviour = field(default_factory=Behaviour)
    low_battery: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        classes = ["cortex-m4f", "esp32-s3"]
        self.devices = [
            DeviceInfo(
                device_id=f"dev-{i:05d}",
                hardware_class=classes[i % 2],
                tags=["field"],
                battery_pct=10.0 if f"dev-{i:05d}" in self.low_battery else 95.0,
                charging=False,
            )
            for i in range(self.n)
        ]
        calib = np.random.default_rng(99).normal(0.0, 1.0, 20_000)
        self.edges = quantile_edges(calib, 10)
        self.baseline = {0: histogram("f0", calib, self.edges).counts}
        self.seq: dict[str, int] = {}
        self.battery: dict[str, float] = {d.device_id: d.battery_pct or 100.0 for d in self.devices}
        self.installed: dict[str, bool] = {}  # device -> runs the candidate
        self.install_failed: set[str] = set()

    def view(self, spec: RolloutSpec) -> FleetView:
        return FleetView.build(spec.rollout_id, spec.target, self.devices)

    def spec(self, rollout_id: str = "ro-1", shadow: bool = False, soak: int = 3600, **kw) -> RolloutSpec:
        return RolloutSpec(
            rollout_id=rollout_id,
            release=RELEASE,
            stages=default_stages(shadow=shadow, min_soak_s=soak),
            control=kw.pop("control", ControlPlan(fraction=0.05, min_devices=20)),
            schedule=kw.pop("schedule", SchedulePlan(devices_per_minute=1000, burst=1000)),
            created_at=T0,
            **kw,
        )

    # ------------------------------------------------------------------ device side

    def apply(self, state: RolloutState, outcome: Outcome, now: int) -> list[OtaStatus]:
        """Devices act on the commands: install (may fail), revert."""
        events = []
        for cmd in outcome.commands:
            for d in cmd.device_ids:
                if cmd.kind == "update":
                    ok = self.rng.random() >= self.install_fail_prob
                    self.installed[d] = ok
                    if not ok:
                        self.install_failed.add(d)
                    events.append(
                        OtaStatus(
                            device_id=d,
                            ts=now,
                            release_id=cmd.release_id,
                            target_version=CAND,
                            state="committed" if ok else "failed",
                        )
                    )
                elif cmd.kind == "revert":
                    self.installed[d] = False
        return events

    def windows(self, start: int, shadowed: set[str]) -> tuple[list[MetricsWindow], list[ErrorEvent]]:
        out, errors = [], []
        for dev in self.devices:
            d = dev.device_id
            cand = self.installed.get(d, False)
            b = self.candidate if cand else self.previous
            n = int(self.inferences_per_window)
            pos = int(self.rng.binomial(n, b.positive_rate))
            fp = min(pos, int(self.rng.binomial(n, b.fp_rate)))
            values = self.rng.normal(b.input_shift, 1.0, min(200, n))
            level = 1 if self.rng.random() < b.fallback_prob else 0
            self.battery[d] = max(1.0, self.battery[d] - b.drain_pct_per_h * WINDOW_S / 3600)
            shadow = None
            if d in shadowed and not cand:
                s = n // 2
                c = self.candidate
                shadow = {
                    "candidate_version": CAND,
                    "samples": s,
                    "agreements": s,
                    "candidate_positives": int(self.rng.binomial(s, c.positive_rate)),
                    "candidate_false_positives": 0,
                    "candidate_latency_p50_us": c.latency_p95_us // 2,
                    "candidate_latency_p95_us": c.latency_p95_us,
                }
                shadow["candidate_false_positives"] = min(
                    shadow["candidate_positives"], int(self.rng.binomial(s, c.fp_rate))
                )
            seq = self.seq.get(d, 0)
            self.seq[d] = seq + 1
            out.append(
                MetricsWindow(
                    device_id=d,
                    seq=seq,
                    window_start_s=start,
                    window_len_s=WINDOW_S,
                    duty_cycle=b.duty_cycle,
                    battery_pct=round(self.battery[d], 1),
                    charging=False,
                    inferences=n,
                    positives=pos,
                    false_positives=fp,
                    latency_p50_us=b.latency_p95_us // 2,
                    latency_p95_us=b.latency_p95_us,
                    latency_max_us=b.latency_p95_us * 2,
                    model=ModelRef(name=MODEL, version=CAND if cand else PREV, variant="full_int8"),
                    fallback_level=level,
                    input_hist=[int(c) for c in bin_counts(values, self.edges)],
                    shadow=shadow,
                )
            )
            k = int(self.rng.binomial(n, b.error_rate)) if b.error_rate else 0
            errors += [
                ErrorEvent(
                    device_id=d,
                    ts=start + 1,
                    component="runtime",
                    code="invoke_failed",
                    message="invoke failed",
                )
                for _ in range(min(k, 3))
            ]
        return out, errors


@dataclass
class Run:
    """Drive the controller over simulated time; keeps every decision and command."""

    sim: SimFleet
    spec: RolloutSpec
    now: int = T0
    decisions: list = field(default_factory=list)
    commands: list = field(default_factory=list)
    windows: list = field(default_factory=list)
    ota: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fleet = self.sim.view(self.spec)
        first = start_rollout(self.spec, self.now)
        self.state = first.state
        self.decisions += first.decisions

    def totals(self) -> DeviceTotals:
        return DeviceTotals.from_windows(
            self.fleet,
            self.windows,
            since=self.state.stage_started_at,
            exposed=self.state.exposed,
            candidate_counter=CAND,
            previous_counter=PREV,
            release_id=RELEASE.release_id,
            ota_events=self.ota,
            error_events=self.errors,
        )

    def step(self) -> Outcome:
        """One decision at ``now``, devices act on it, then one window of telemetry passes."""
        out = decide(self.state, self.fleet, self.totals(), self.now, baseline=self.sim.baseline)
        self.state = out.state
        self.decisions += out.decisions
        self.commands += out.commands
        self.ota += self.sim.apply(self.state, out, self.now)
        w, e = self.sim.windows(self.now, set(self.state.shadowed))
        self.windows = [x for x in self.windows if x.window_start_s >= self.state.stage_started_at] + w
        self.errors += e
        self.now += WINDOW_S
        return out

    def until(self, statuses: set[str], max_steps: int = 200) -> RolloutState:
        for _ in range(max_steps):
            if self.state.status in statuses:
                break
            self.step()
        return self.state
