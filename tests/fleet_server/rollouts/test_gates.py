"""Each gate on hand-made per-device totals: pass / soft / hard / insufficient at its thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from converters.baselines import bin_counts, histogram, quantile_edges
from converters.report import BaselineFeatureSpec, Baselines, OutputScoreSpec
from fleet_server.rollouts import DeviceInfo, DeviceTotals, FleetView, RolloutError, TargetFilter
from fleet_server.rollouts.gates import (
    GateContext,
    baseline_counts,
    battery_gate,
    drift_gate,
    duty_cycle_gate,
    evaluate_gates,
    fallback_gate,
    false_positive_gate,
    install_gate,
    latency_gate,
    serving_error_gate,
    worst_verdict,
)
from fleet_server.rollouts.model import (
    DriftGateConfig,
    FallbackGateConfig,
    FalsePositiveGateConfig,
    GateConfig,
    InstallGateConfig,
    LatencyGateConfig,
    RelativeGateConfig,
    ServingErrorGateConfig,
)
from fleet_server.rollouts.totals import INSTALL_FAILED, INSTALL_OK

N_COHORT, N_CONTROL = 10, 20


def _ctx(shadow: bool = False, baseline: dict | None = None) -> GateContext:
    devs = [
        DeviceInfo(device_id=f"d{i}", hardware_class="cortex-m4f" if i % 2 else "pi-4")
        for i in range(N_COHORT + N_CONTROL + 5)
    ]
    fleet = FleetView.build("ro-g", TargetFilter(), devs)
    cohort = np.zeros(fleet.size, dtype=bool)
    cohort[:N_COHORT] = True
    control = np.zeros(fleet.size, dtype=bool)
    control[N_COHORT : N_COHORT + N_CONTROL] = True
    return GateContext(
        fleet, DeviceTotals.empty(fleet.size), cohort, control, shadow=shadow, baseline=baseline
    )


def _set(ctx: GateContext, name: str, cohort_value: float, control_value: float) -> None:
    arr = getattr(ctx.totals, name)
    arr[ctx.cohort] = cohort_value
    arr[ctx.control] = control_value


def test_install_gate_thresholds() -> None:
    ctx = _ctx()
    cfg = InstallGateConfig(soft_max_rate=0.05, error_threshold=0.2)
    assert install_gate(ctx, cfg).verdict == "insufficient_data"
    st = ctx.totals.install_state
    st[:10] = INSTALL_OK
    assert install_gate(ctx, cfg).verdict == "pass"
    st[0] = INSTALL_FAILED  # 1/10 = 10 %: above 5 %, below the 20 % error threshold
    r = install_gate(ctx, cfg)
    assert (r.verdict, r.value, r.evidence["failed"]) == ("soft_fail", 0.1, 1)
    st[1] = INSTALL_FAILED  # 2/10 = 20 %: not above
    assert install_gate(ctx, cfg).verdict == "soft_fail"
    st[2] = INSTALL_FAILED  # 30 %: emergency stop
    assert install_gate(ctx, cfg).verdict == "hard_fail"
    st[N_COHORT:] = INSTALL_FAILED  # control devices' installs are not the cohort's business
    assert install_gate(ctx, cfg).value == pytest.approx(0.3)


def test_false_positive_gate_verdicts() -> None:
    cfg = FalsePositiveGateConfig(
        alpha=0.05, power=0.8, min_detectable_abs=0.002, min_detectable_rel=0.0, min_trials=200
    )
    ctx = _ctx()
    _set(ctx, "inferences", 10, 10)
    assert false_positive_gate(ctx, cfg).verdict == "insufficient_data"  # 100 trials < 200
    # Same rate, too few trials for the required n: holds, does not fail.
    _set(ctx, "inferences", 100, 100)
    _set(ctx, "false_positives", 1, 1)
    r = false_positive_gate(ctx, cfg)
    assert r.verdict == "insufficient_data"
    n_req = r.evidence["n_required"]
    assert n_req == pytest.approx(2 * (1.959964 + 0.841621) ** 2 * 0.01 * 0.99 / 0.002**2, abs=2)
    assert "needed" in r.reason and r.evidence["enough_evidence"] is False
    # Enough trials, same rate: pass.
    _set(ctx, "inferences", 10_000, 10_000)
    _set(ctx, "false_positives", 100, 100)
    r = false_positive_gate(ctx, cfg)
    assert r.verdict == "pass" and r.evidence["enough_evidence"]
    # Much worse cohort: hard fail with z and p in the evidence.
    _set(ctx, "false_positives", 300, 100)  # 3 % vs 1 %
    r = false_positive_gate(ctx, cfg)
    assert r.verdict == "hard_fail" and r.values["z"] > 10 and r.values["p_value"] < 1e-6
    # Significant but below the minimum detectable increase: soft fail (operator decides).
    # Significant but below the minimum detectable increase: a note by default, a pause when configured.
    big = FalsePositiveGateConfig(min_detectable_abs=0.05, min_detectable_rel=0.0)
    r = false_positive_gate(ctx, big)
    assert r.verdict == "pass" and "but by less than" in r.reason
    pausing = big.model_copy(update={"soft_fail_below_delta": True})
    assert false_positive_gate(ctx, pausing).verdict == "soft_fail"
    # Interim look: worse at alpha but not beyond the early-stop boundary, before the required n: hold.
    _set(ctx, "inferences", 100, 100)  # 1,000 vs 2,000 trials
    _set(ctx, "false_positives", 2, 1)  # 2 % vs 1 %: z = 2.25, p = 0.012
    r = false_positive_gate(ctx, cfg)
    assert r.verdict == "insufficient_data" and "trending higher" in r.reason
    assert 0.001 < r.values["p_value"] < 0.05
    _set(ctx, "false_positives", 3, 1)  # 3 % vs 1 %: z = 4.04, p < 0.001 -> stop early
    assert false_positive_gate(ctx, cfg).verdict == "hard_fail"
    _set(ctx, "inferences", 10_000, 10_000)
    # Before the soak is over (not the final look) only the early-stop boundary fails the test.
    _set(ctx, "false_positives", 300, 100)
    ctx.final_look = False
    assert false_positive_gate(ctx, pausing).verdict == "pass"
    assert false_positive_gate(ctx, cfg).verdict == "hard_fail"
    ctx.final_look = True
    assert false_positive_gate(ctx, pausing).verdict == "soft_fail"
    # A better cohort is never a failure.
    _set(ctx, "false_positives", 50, 100)
    assert false_positive_gate(ctx, cfg).verdict == "pass"


def test_false_positive_gate_per_positive_and_shadow() -> None:
    ctx = _ctx(shadow=True)
    t = ctx.totals
    t.inferences[ctx.cohort] = 10_000
    t.false_positives[ctx.cohort] = 100  # primary: 1 %
    t.shadow_samples[ctx.cohort] = 5_000
    t.candidate_false_positives[ctx.cohort] = 200  # candidate in shadow: 4 %
    r = false_positive_gate(ctx, FalsePositiveGateConfig())
    assert r.verdict == "hard_fail" and "shadow" in r.evidence["against"]
    assert r.values["cohort_rate"] == pytest.approx(0.04) and r.values["control_rate"] == pytest.approx(0.01)
    ctx2 = _ctx()
    _set(ctx2, "positives", 1000, 1000)
    _set(ctx2, "false_positives", 100, 100)
    r = false_positive_gate(ctx2, FalsePositiveGateConfig(per="positives"))
    assert r.evidence["cohort_n"] == 10_000 and r.values["cohort_rate"] == pytest.approx(0.1)


def test_relative_gates_battery_and_duty_cycle() -> None:
    cfg = RelativeGateConfig(soft_max_increase=0.10, hard_max_increase=0.5, min_devices=3)
    ctx = _ctx()
    _set(ctx, "inferences", 100, 100)
    assert battery_gate(ctx, cfg).verdict == "insufficient_data"  # no drain figures (NaN)
    _set(ctx, "battery_drain_pct_per_h", 1.05, 1.0)
    assert battery_gate(ctx, cfg).verdict == "pass"
    _set(ctx, "battery_drain_pct_per_h", 1.2, 1.0)
    r = battery_gate(ctx, cfg)
    assert r.verdict == "soft_fail" and r.value == pytest.approx(0.2)
    _set(ctx, "battery_drain_pct_per_h", 1.6, 1.0)
    assert battery_gate(ctx, cfg).verdict == "hard_fail"
    # duty cycle is sum(active) / sum(window), not a mean of ratios
    _set(ctx, "window_s", 1000, 1000)
    _set(ctx, "active_s", 20, 20)
    ctx.totals.window_s[0] = 9000
    ctx.totals.active_s[0] = 9000 * 0.02
    assert duty_cycle_gate(ctx, cfg).values["cohort"] == pytest.approx(0.02)
    ctx.totals.active_s[ctx.cohort] *= 1.3
    assert duty_cycle_gate(ctx, cfg).verdict == "soft_fail"


def test_relative_gates_compare_within_hardware_classes() -> None:
    """An MCU's duty cycle is ~300x a Pi's: a cohort holding more MCUs than the control group must not look
    like a regression (compared class by class), and a real increase within a class still fails."""
    cfg = RelativeGateConfig(soft_max_increase=0.10, hard_max_increase=0.5, min_devices=3)
    devs = [
        DeviceInfo(device_id=f"d{i}", hardware_class="cortex-m4f" if i < 8 else "pi-4") for i in range(20)
    ]
    fleet = FleetView.build("ro-mix", TargetFilter(), devs)
    cohort = np.zeros(fleet.size, dtype=bool)
    cohort[[0, 1, 2, 3, 4, 5, 8, 9, 10]] = True  # 6 MCUs + 3 Pis
    control = np.zeros(fleet.size, dtype=bool)
    control[[6, 7, 11, 12, 13, 14, 15, 16, 17]] = True  # 2 MCUs + 7 Pis
    ctx = GateContext(fleet, DeviceTotals.empty(fleet.size), cohort, control)
    mcu = fleet.hardware_class == "cortex-m4f"
    t = ctx.totals
    t.inferences[:] = 100
    t.window_s[:] = 1000
    t.active_s[:] = np.where(mcu, 300.0, 1.0)  # same model behaviour per class, very different classes
    t.battery_drain_pct_per_h[:] = np.where(mcu, 0.01, 2.0)
    pooled = (
        t.active_s[cohort].sum()
        / t.window_s[cohort].sum()
        / (t.active_s[control].sum() / t.window_s[control].sum())
    )
    assert pooled > 2, "pooled over classes, the class mix alone looks like a +100 % regression"
    duty, battery = duty_cycle_gate(ctx, cfg), battery_gate(ctx, cfg)
    assert duty.verdict == "pass" and duty.value == pytest.approx(0.0)
    assert battery.verdict == "pass" and battery.value == pytest.approx(0.0)
    assert set(duty.evidence["per_class"]) == {"cortex-m4f", "pi-4"}
    t.active_s[cohort & ~mcu] *= 1.3  # the candidate costs 30 % more on the Pis only
    t.battery_drain_pct_per_h[cohort & mcu] *= 1.8  # and drains the MCUs 80 % faster
    assert duty_cycle_gate(ctx, cfg).evidence["per_class"]["pi-4"]["cohort"] == pytest.approx(1.3e-3)
    assert battery_gate(ctx, cfg).verdict == "hard_fail"


def test_latency_gate_per_class_budget() -> None:
    ctx = _ctx()
    _set(ctx, "inferences", 100, 100)
    ctx.totals.latency_p95_us[ctx.cohort & (ctx.fleet.hardware_class == "pi-4")] = 5_000
    ctx.totals.latency_p95_us[ctx.cohort & (ctx.fleet.hardware_class == "cortex-m4f")] = 90_000
    assert latency_gate(ctx, LatencyGateConfig()).verdict == "pass"  # no budget: not checked
    cfg = LatencyGateConfig(budget_us=10_000, per_class_budget_us={"cortex-m4f": 100_000})
    r = latency_gate(ctx, cfg)
    assert r.verdict == "pass" and r.evidence["per_class"]["cortex-m4f"]["p95_us"] == 90_000
    cfg = LatencyGateConfig(budget_us=10_000, per_class_budget_us={"cortex-m4f": 60_000})
    r = latency_gate(ctx, cfg)
    assert r.verdict == "soft_fail" and r.threshold == 60_000
    cfg = LatencyGateConfig(budget_us=2_000, per_class_budget_us={"cortex-m4f": 100_000}, hard_factor=2.0)
    assert latency_gate(ctx, cfg).verdict == "hard_fail"  # pi-4 at 2.5x its budget


def test_fallback_and_serving_error_gates() -> None:
    ctx = _ctx()
    cfg = FallbackGateConfig(soft_max_share=0.05, hard_max_share=0.2)
    assert fallback_gate(ctx, cfg).verdict == "insufficient_data"
    _set(ctx, "inferences", 1000, 1000)
    assert fallback_gate(ctx, cfg).verdict == "pass"
    ctx.totals.fell_back[:1] = True
    assert fallback_gate(ctx, cfg).verdict == "soft_fail"  # 1 of 10
    ctx.totals.fell_back[:3] = True
    assert fallback_gate(ctx, cfg).verdict == "hard_fail"  # 3 of 10
    se = ServingErrorGateConfig(soft_max_rate=1e-4, hard_max_rate=1e-3)
    assert serving_error_gate(ctx, se).verdict == "pass"
    ctx.totals.serving_errors[0] = 5  # 5 / 10,000
    assert serving_error_gate(ctx, se).verdict == "soft_fail"
    ctx.totals.serving_errors[0] = 50
    assert serving_error_gate(ctx, se).verdict == "hard_fail"
    ctx.totals.inferences[:] = 0  # errors and no inference at all: the model does not run
    assert serving_error_gate(ctx, se).verdict == "hard_fail"


def _baselines() -> tuple[Baselines, list[float]]:
    calib = np.random.default_rng(0).normal(0, 1, 10_000)
    edges = quantile_edges(calib, 10)
    spec = BaselineFeatureSpec(input_shape=[1], axis=0, group_bounds=[0, 1], description="x")
    score = OutputScoreSpec(kind="max_softmax", class_ids=[0, 1])
    b = Baselines(
        samples=10_000,
        feature_spec=spec,
        features=[histogram("f0", calib, edges)],
        output_score_spec=score,
        output_score=histogram("score", calib, edges),
    )
    return b, edges


def test_drift_gate_psi_against_converter_baseline() -> None:
    baselines, edges = _baselines()
    ctx = _ctx(baseline=baseline_counts(baselines))
    rng = np.random.default_rng(1)
    cfg = DriftGateConfig(soft_max_psi=0.2, min_samples=500)
    ctx.totals.input_hist[0] = np.zeros((ctx.fleet.size, 10), dtype=np.int64)
    assert drift_gate(ctx, cfg).verdict == "insufficient_data"
    for i in np.flatnonzero(ctx.cohort | ctx.control):
        ctx.totals.input_hist[0][i] = bin_counts(rng.normal(0, 1, 200), edges)
    r = drift_gate(ctx, cfg)
    assert r.verdict == "pass" and r.value < 0.1
    for i in np.flatnonzero(ctx.cohort):
        ctx.totals.input_hist[0][i] = bin_counts(rng.normal(1.0, 1, 200), edges)  # one-sigma shift
    r = drift_gate(ctx, cfg)
    assert r.verdict == "soft_fail" and r.value > 0.2
    assert r.evidence["features"]["0"]["control_psi"] < 0.1  # the control group did not drift
    ctx.totals.input_hist[0] = np.ones((ctx.fleet.size, 7), dtype=np.int64) * 100  # other bins than baseline
    r = drift_gate(ctx, cfg)
    assert r.verdict == "soft_fail" and "different bin counts" in r.reason


def test_evaluate_gates_order_disabled_and_worst() -> None:
    ctx = _ctx()
    cfg = GateConfig(install=InstallGateConfig(enabled=False))
    names = [r.name for r in evaluate_gates(ctx, cfg)]
    assert names == [
        "serving_errors",
        "false_positive",
        "battery_drain",
        "duty_cycle",
        "latency_p95",
        "fallback",
        "input_drift",
    ]
    results = evaluate_gates(ctx, GateConfig())
    assert worst_verdict(results) == "insufficient_data"
    assert worst_verdict([]) == "pass"


def test_totals_misaligned_rejected() -> None:
    t = DeviceTotals.empty(5)
    with pytest.raises(RolloutError, match="'inferences' has 5 rows, the fleet has 6"):
        t.check(6)
    t = DeviceTotals.empty(6)
    t.input_hist[0] = np.zeros((5, 10))
    with pytest.raises(RolloutError, match=r"input_hist\[0\] must have shape \(6, bins\)"):
        t.check(6)
