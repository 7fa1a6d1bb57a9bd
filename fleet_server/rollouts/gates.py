"""Stage gates: each turns the cohort's and the control group's totals into a GateResult.

A gate never raises on thin data: it answers ``insufficient_data`` and says what is missing. The
cohort is the set of devices commanded to install the candidate in this stage's cohort (or, in a
shadow stage, running it in shadow); the control group stays on the previous version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from converters.report import Baselines
from fleet_server.rollouts.cohorts import FleetView
from fleet_server.rollouts.model import (
    DriftGateConfig,
    FallbackGateConfig,
    FalsePositiveGateConfig,
    GateConfig,
    GateResult,
    InstallGateConfig,
    LatencyGateConfig,
    RelativeGateConfig,
    ServingErrorGateConfig,
    Verdict,
)
from fleet_server.rollouts.statistics import required_sample_size, two_proportion_z_test
from fleet_server.rollouts.totals import INSTALL_FAILED, INSTALL_OK, DeviceTotals
from telemetry.drift import DriftInputError, drift_status, psi

SEVERITY: dict[Verdict, int] = {"pass": 0, "insufficient_data": 1, "soft_fail": 2, "hard_fail": 3}


@dataclass
class GateContext:
    fleet: FleetView
    totals: DeviceTotals
    cohort: np.ndarray  # bool mask
    control: np.ndarray  # bool mask
    shadow: bool = False  # shadow stage: compare the candidate's shadow figures with the primary's
    baseline: Mapping[int, Sequence[float]] | None = None  # input feature -> baseline histogram counts
    # The controller's final look of a stage (soak over). Before it only the early-stop boundary can fail the
    # FP test: testing at alpha on every decision ("peeking") would pause good releases.
    final_look: bool = True

    @property
    def reporting(self) -> np.ndarray:
        return self.cohort & (self.totals.inferences > 0)

    @property
    def control_reporting(self) -> np.ndarray:
        return self.control & (self.totals.inferences > 0)


def _s(arr: np.ndarray, mask: np.ndarray) -> int:
    return int(arr[mask].sum())


def install_gate(ctx: GateContext, cfg: InstallGateConfig) -> GateResult:
    st = ctx.totals.install_state
    ok, failed = _s(st == INSTALL_OK, ctx.cohort), _s(st == INSTALL_FAILED, ctx.cohort)
    finished = ok + failed
    ev = {
        "commanded": int(ctx.cohort.sum()),
        "succeeded": ok,
        "failed": failed,
        "soft_max_rate": cfg.soft_max_rate,
        "error_threshold": cfg.error_threshold,
    }
    if finished == 0:
        return GateResult(
            name="install",
            verdict="insufficient_data",
            threshold=cfg.error_threshold,
            evidence=ev,
            reason="no install has finished yet",
        )
    rate = failed / finished
    if rate > cfg.error_threshold:
        verdict, reason = "hard_fail", f"install failure rate {rate:.1%} above the error threshold"
    elif rate > cfg.soft_max_rate:
        verdict, reason = "soft_fail", f"install failure rate {rate:.1%} above {cfg.soft_max_rate:.1%}"
    else:
        verdict, reason = "pass", f"install failure rate {rate:.1%}"
    return GateResult(
        name="install", verdict=verdict, value=rate, threshold=cfg.error_threshold, evidence=ev, reason=reason
    )


def false_positive_gate(ctx: GateContext, cfg: FalsePositiveGateConfig) -> GateResult:
    t = ctx.totals
    if ctx.shadow:  # candidate (shadow figures) vs the primary model on the same devices
        x1 = _s(t.candidate_false_positives, ctx.cohort)
        n1 = _s(t.shadow_samples if cfg.per == "inferences" else t.candidate_positives, ctx.cohort)
        x2 = _s(t.false_positives, ctx.cohort)
        n2 = _s(t.inferences if cfg.per == "inferences" else t.positives, ctx.cohort)
        against = "the current model on the same (shadow) devices"
    else:
        denom = t.inferences if cfg.per == "inferences" else t.positives
        x1, n1 = _s(t.false_positives, ctx.cohort), _s(denom, ctx.cohort)
        x2, n2 = _s(t.false_positives, ctx.control), _s(denom, ctx.control)
        against = "the control group"
    ev: dict = {
        "per": cfg.per,
        "against": against,
        "cohort_fp": x1,
        "cohort_n": n1,
        "control_fp": x2,
        "control_n": n2,
        "alpha": cfg.alpha,
        "power": cfg.power,
        "min_trials": cfg.min_trials,
    }
    if n1 < cfg.min_trials or n2 < cfg.min_trials:
        return GateResult(
            name="false_positive",
            verdict="insufficient_data",
            threshold=cfg.alpha,
            evidence=ev,
            values={"cohort_n": n1, "control_n": n2},
            reason=f"fewer than {cfg.min_trials} trials in the cohort or the control",
        )
    test = two_proportion_z_test(x1, n1, x2, n2)
    delta = max(cfg.min_detectable_abs, cfg.min_detectable_rel * test.p2)
    n_req = required_sample_size(test.p2, delta, cfg.alpha, cfg.power)
    increase = test.p1 - test.p2
    values = {
        "cohort_rate": test.p1,
        "control_rate": test.p2,
        "z": test.z,
        "p_value": test.p_value,
        "delta": delta,
        "n_required": float(n_req),
        "cohort_n": float(n1),
        "control_n": float(n2),
    }
    ev.update(
        delta=delta,
        n_required=n_req,
        enough_evidence=min(n1, n2) >= n_req,
        early_stop_alpha=cfg.early_stop_alpha,
    )
    enough = min(n1, n2) >= n_req
    rates = f"FP rate {test.p1:.4%} vs {test.p2:.4%}"
    if test.significant(cfg.early_stop_alpha) and increase >= delta:
        verdict: Verdict = "hard_fail"
        reason = (
            f"{rates}: higher beyond the early-stop boundary (p={test.p_value:.2g} < "
            f"{cfg.early_stop_alpha}) by at least the minimum detectable increase {delta:.4%}"
        )
    elif not enough:
        verdict = "insufficient_data"
        trend = f" (trending higher, p={test.p_value:.2g})" if test.significant(cfg.alpha) else ""
        reason = f"no conclusion yet{trend}; {n_req} trials per group needed, have {min(n1, n2)}"
    elif not ctx.final_look:
        verdict, reason = "pass", f"{rates}: interim look, no early stop; tested at alpha after the soak"
    elif test.significant(cfg.alpha) and increase >= delta:
        verdict = "hard_fail"
        reason = f"{rates}: significantly higher (p={test.p_value:.2g}) by at least {delta:.4%}"
    elif test.significant(cfg.alpha):
        # Significant but smaller than what the operator said matters: at alpha = 0.05 per stage this
        # happens to one good release in four over four stages, so it pauses only when asked to.
        verdict = "soft_fail" if cfg.soft_fail_below_delta else "pass"
        reason = f"{rates}: significantly higher (p={test.p_value:.2g}) but by less than {delta:.4%}"
    else:
        verdict, reason = "pass", f"{rates}: no significant increase (p={test.p_value:.2g})"
    return GateResult(
        name="false_positive",
        verdict=verdict,
        value=test.p1,
        threshold=cfg.alpha,
        values=values,
        evidence=ev,
        reason=reason,
    )


def _relative(
    name: str,
    cohort_value: float | None,
    control_value: float | None,
    n1: int,
    n2: int,
    cfg: RelativeGateConfig,
    rel: float | None = None,
) -> GateResult:
    ev = {
        "cohort_devices": n1,
        "control_devices": n2,
        "soft_max_increase": cfg.soft_max_increase,
        "hard_max_increase": cfg.hard_max_increase,
        "min_devices": cfg.min_devices,
    }
    values = {"cohort": cohort_value, "control": control_value}
    if n1 < cfg.min_devices or n2 < cfg.min_devices or cohort_value is None or control_value is None:
        return GateResult(
            name=name,
            verdict="insufficient_data",
            threshold=cfg.soft_max_increase,
            values=values,
            evidence=ev,
            reason=f"fewer than {cfg.min_devices} devices with a figure per group",
        )
    per_class_rel = rel is not None
    if rel is None and control_value <= 0:
        verdict: Verdict = "pass" if cohort_value <= 0 else "soft_fail"
        return GateResult(
            name=name,
            verdict=verdict,
            threshold=cfg.soft_max_increase,
            values=values,
            evidence=ev,
            reason="control figure is zero: relative increase undefined",
        )
    if rel is None:
        rel = (cohort_value - control_value) / control_value
    if rel > cfg.hard_max_increase:
        verdict = "hard_fail"
    elif rel > cfg.soft_max_increase:
        verdict = "soft_fail"
    else:
        verdict = "pass"
    return GateResult(
        name=name,
        verdict=verdict,
        value=rel,
        threshold=cfg.soft_max_increase,
        values=values,
        evidence=ev,
        reason=f"{name} {cohort_value:.4g} vs control {control_value:.4g} ({rel:+.1%}"
        + (", mean of the per-class changes)" if per_class_rel else ")"),
    )


def _standardized(
    ctx: GateContext, figure: Callable[[np.ndarray], float | None], has: np.ndarray | None = None
) -> tuple[float | None, float | None, float | None, int, int, dict[str, dict[str, float | int | None]]]:
    """Cohort and control figures compared class by class.

    A microcontroller's duty cycle is ~300x a Pi's, so plain means over a mixed fleet compare the class mix
    of the two groups, not the model. Each hardware class present in both groups gives a figure per group
    (``figure(mask)``) and a relative increase; the verdict takes the mean of those increases weighted by
    the cohort's devices per class (so a class with tiny absolute figures counts as much as its devices),
    and the values shown are both groups' figures averaged with the cohort's class weights."""
    c1, c2 = ctx.reporting, ctx.control_reporting
    if has is not None:
        c1, c2 = c1 & has, c2 & has
    per_class: dict[str, dict[str, float | int | None]] = {}
    num1 = num2 = weight = rel_sum = rel_weight = 0.0
    n1 = n2 = 0
    for hw in sorted(set(ctx.fleet.hardware_class[c1 | c2].tolist())):
        in_class = ctx.fleet.hardware_class == hw
        m1, m2 = c1 & in_class, c2 & in_class
        v1 = figure(m1) if m1.any() else None
        v2 = figure(m2) if m2.any() else None
        per_class[hw] = {
            "cohort": v1,
            "control": v2,
            "cohort_devices": int(m1.sum()),
            "control_devices": int(m2.sum()),
        }
        if v1 is None or v2 is None:
            continue  # a class only one group has tells nothing about the model
        w = float(m1.sum())
        num1, num2, weight = num1 + w * v1, num2 + w * v2, weight + w
        n1, n2 = n1 + int(m1.sum()), n2 + int(m2.sum())
        if v2 > 0:
            per_class[hw]["relative_increase"] = (v1 - v2) / v2
            rel_sum, rel_weight = rel_sum + w * (v1 - v2) / v2, rel_weight + w
    if weight == 0:
        return None, None, None, n1, n2, per_class
    rel = rel_sum / rel_weight if rel_weight > 0 else None
    return num1 / weight, num2 / weight, rel, n1, n2, per_class


def _with_classes(result: GateResult, per_class: dict[str, dict[str, float | int | None]]) -> GateResult:
    result.evidence["per_class"] = per_class
    result.evidence["comparison"] = "per hardware class, weighted by the cohort's class mix"
    return result


def battery_gate(ctx: GateContext, cfg: RelativeGateConfig) -> GateResult:
    d = ctx.totals.battery_drain_pct_per_h
    v1, v2, rel, n1, n2, per_class = _standardized(ctx, lambda m: float(d[m].mean()), np.isfinite(d))
    return _with_classes(_relative("battery_drain", v1, v2, n1, n2, cfg, rel), per_class)


def duty_cycle_gate(ctx: GateContext, cfg: RelativeGateConfig) -> GateResult:
    t = ctx.totals

    def duty(m: np.ndarray) -> float | None:
        w = float(t.window_s[m].sum())
        return float(t.active_s[m].sum()) / w if w > 0 else None

    v1, v2, rel, n1, n2, per_class = _standardized(ctx, duty)
    return _with_classes(_relative("duty_cycle", v1, v2, n1, n2, cfg, rel), per_class)


def latency_gate(ctx: GateContext, cfg: LatencyGateConfig) -> GateResult:
    t = ctx.totals
    if ctx.shadow:
        p95, weight = t.candidate_latency_p95_us, t.shadow_samples
    else:
        p95, weight = t.latency_p95_us, t.inferences
    mask = ctx.cohort & (weight > 0)
    if not mask.any():
        return GateResult(
            name="latency_p95",
            verdict="insufficient_data",
            threshold=cfg.budget_us,
            reason="no cohort device has reported latency",
        )
    per_class: dict[str, dict] = {}
    worst: tuple[float, str, float, float] | None = None  # (ratio, class, p95, budget)
    classes = ctx.fleet.hardware_class[mask]
    for hw in sorted(set(classes.tolist())):
        m = mask & (ctx.fleet.hardware_class == hw)
        value = float((p95[m] * weight[m]).sum() / weight[m].sum())
        budget = cfg.per_class_budget_us.get(hw, cfg.budget_us)
        per_class[hw] = {"p95_us": value, "budget_us": budget, "devices": int(m.sum())}
        if budget is not None and (worst is None or value / budget > worst[0]):
            worst = (value / budget, hw, value, budget)
    ev = {
        "per_class": per_class,
        "hard_factor": cfg.hard_factor,
        "approximation": "inference-weighted mean of the devices' window p95s",
    }
    if worst is None:
        return GateResult(
            name="latency_p95", verdict="pass", evidence=ev, reason="no latency budget configured"
        )
    ratio, hw, value, budget = worst
    if ratio > cfg.hard_factor:
        verdict: Verdict = "hard_fail"
    elif ratio > 1.0:
        verdict = "soft_fail"
    else:
        verdict = "pass"
    return GateResult(
        name="latency_p95",
        verdict=verdict,
        value=value,
        threshold=budget,
        evidence=ev,
        values={"ratio_to_budget": ratio},
        reason=f"p95 {value:.0f} us on {hw} vs budget {budget:.0f} us",
    )


def fallback_gate(ctx: GateContext, cfg: FallbackGateConfig) -> GateResult:
    n = int(ctx.reporting.sum())
    if n == 0:
        return GateResult(
            name="fallback",
            verdict="insufficient_data",
            threshold=cfg.soft_max_share,
            reason="no cohort device reporting",
        )
    fell = int((ctx.totals.fell_back & ctx.reporting).sum())
    share = fell / n
    verdict: Verdict = (
        "hard_fail" if share > cfg.hard_max_share else "soft_fail" if share > cfg.soft_max_share else "pass"
    )
    return GateResult(
        name="fallback",
        verdict=verdict,
        value=share,
        threshold=cfg.soft_max_share,
        evidence={"fell_back": fell, "reporting": n, "hard_max_share": cfg.hard_max_share},
        reason=f"{fell} of {n} reporting cohort devices fell back",
    )


def drift_gate(ctx: GateContext, cfg: DriftGateConfig) -> GateResult:
    if not ctx.baseline:
        return GateResult(
            name="input_drift", verdict="pass", reason="no converter baseline given: not checked"
        )
    features: dict[str, dict] = {}
    worst: float | None = None
    short = False
    for feature, base in sorted(ctx.baseline.items()):
        hist = ctx.totals.input_hist.get(feature)
        if hist is None:
            continue
        cohort_hist = hist[ctx.cohort].sum(axis=0)
        control_hist = hist[ctx.control].sum(axis=0)
        n = int(cohort_hist.sum())
        entry: dict = {"samples": n}
        if n < cfg.min_samples:
            short = True
            features[str(feature)] = entry
            continue
        try:
            value = psi(base, cohort_hist)
            entry.update(psi=value, status=drift_status(value))
            if control_hist.sum() > 0:
                entry["control_psi"] = psi(base, control_hist)
        except DriftInputError as exc:
            entry["error"] = str(exc)
            features[str(feature)] = entry
            return GateResult(
                name="input_drift",
                verdict="soft_fail",
                evidence={"features": features},
                reason=f"input histogram of feature {feature} not comparable: {exc}",
            )
        features[str(feature)] = entry
        worst = value if worst is None else max(worst, value)
    ev = {"features": features, "min_samples": cfg.min_samples}
    if worst is None:
        return GateResult(
            name="input_drift",
            verdict="insufficient_data",
            threshold=cfg.soft_max_psi,
            evidence=ev,
            reason=f"fewer than {cfg.min_samples} binned inputs in the cohort",
        )
    if worst > cfg.soft_max_psi:
        verdict: Verdict = "soft_fail"
    elif short:
        verdict = "insufficient_data"
    else:
        verdict = "pass"
    return GateResult(
        name="input_drift",
        verdict=verdict,
        value=worst,
        threshold=cfg.soft_max_psi,
        evidence=ev,
        reason=f"largest PSI {worst:.3f} ({drift_status(worst)})",
    )


def serving_error_gate(ctx: GateContext, cfg: ServingErrorGateConfig) -> GateResult:
    errors = _s(ctx.totals.serving_errors, ctx.cohort)
    inferences = _s(ctx.totals.inferences, ctx.cohort)
    ev = {"errors": errors, "inferences": inferences, "hard_max_rate": cfg.hard_max_rate}
    if inferences == 0:
        if errors:
            return GateResult(
                name="serving_errors",
                verdict="hard_fail",
                evidence=ev,
                threshold=cfg.hard_max_rate,
                reason=f"{errors} serving errors and no successful inference",
            )
        return GateResult(
            name="serving_errors",
            verdict="insufficient_data",
            evidence=ev,
            threshold=cfg.hard_max_rate,
            reason="no inference reported",
        )
    rate = errors / inferences
    verdict: Verdict = (
        "hard_fail" if rate > cfg.hard_max_rate else "soft_fail" if rate > cfg.soft_max_rate else "pass"
    )
    return GateResult(
        name="serving_errors",
        verdict=verdict,
        value=rate,
        threshold=cfg.hard_max_rate,
        evidence=ev,
        reason=f"{errors} serving errors in {inferences} inferences",
    )


_GATES: tuple[tuple[str, Callable[[GateContext, object], GateResult]], ...] = (
    ("install", install_gate),  # type: ignore[list-item]
    ("serving_errors", serving_error_gate),  # type: ignore[list-item]
    ("false_positive", false_positive_gate),  # type: ignore[list-item]
    ("battery_drain", battery_gate),  # type: ignore[list-item]
    ("duty_cycle", duty_cycle_gate),  # type: ignore[list-item]
    ("latency", latency_gate),  # type: ignore[list-item]
    ("fallback", fallback_gate),  # type: ignore[list-item]
    ("drift", drift_gate),  # type: ignore[list-item]
)


def evaluate_gates(ctx: GateContext, config: GateConfig) -> list[GateResult]:
    """Every enabled gate of the stage, in a fixed order."""
    results = []
    for field_name, gate in _GATES:
        cfg = getattr(config, field_name)
        if cfg.enabled:
            results.append(gate(ctx, cfg))
    return results


def worst_verdict(results: Sequence[GateResult]) -> Verdict:
    return max((r.verdict for r in results), key=lambda v: SEVERITY[v], default="pass")


def baseline_counts(baselines: Baselines) -> dict[int, list[int]]:
    """Input feature index -> baseline histogram counts, from a converter report's baselines (the
    order of ``baselines.features`` is the ``input_feature`` index devices report)."""
    return {i: list(h.counts) for i, h in enumerate(baselines.features)}
