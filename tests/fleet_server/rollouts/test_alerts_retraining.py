"""Alert severities, drift status, the retraining trigger, and the T* estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rollout_sim import Behaviour, Run, SimFleet

from converters.baselines import bin_counts, histogram, quantile_edges
from fleet_server.rollouts import groups
from fleet_server.rollouts.alerts import RESPONSE_TIME, AlertRules, GroupFigures, evaluate_alerts
from fleet_server.rollouts.retraining import RetrainingInputError, estimate, fit_decay, optimal_interval

CALIB = np.random.default_rng(0).normal(0, 1, 20_000)
EDGES = quantile_edges(CALIB, 10)
BASELINE = {0: histogram("f0", CALIB, EDGES).counts}


def _hist(shift: float, n: int = 5000) -> list[int]:
    return bin_counts(np.random.default_rng(1).normal(shift, 1, n), EDGES).tolist()


def _alerts(fig: GroupFigures, ref: GroupFigures | None = None, **rules):
    return evaluate_alerts(
        "kws", "1.7.0", "canary", fig, 1000.0, reference=ref, baseline=BASELINE, rules=AlertRules(**rules)
    )


def test_quiet_group_raises_nothing() -> None:
    fig = GroupFigures(
        devices=5, inferences=100_000, positives=3000, false_positives=300, input_hist={0: _hist(0)}
    )
    rep = _alerts(fig, ref=fig)
    assert rep.alerts == [] and rep.retraining_trigger is None
    assert rep.drift.status == "stable" and not rep.drift.alert


def test_p0_serving_errors_and_p3_minor() -> None:
    rep = _alerts(GroupFigures(inferences=10_000, serving_errors=50))
    assert [(a.severity, a.code) for a in rep.alerts] == [("P0", "serving_errors")]
    assert rep.alerts[0].response_time == RESPONSE_TIME["P0"] == "15 minutes"
    assert _alerts(GroupFigures(inferences=0, serving_errors=3)).alerts[0].severity == "P0"  # nothing runs
    assert _alerts(GroupFigures(inferences=100_000, serving_errors=5)).alerts[0].severity == "P3"


def test_p1_accuracy_proxy_degradation_above_ten_percent() -> None:
    ref = GroupFigures(positives=1000, false_positives=100)  # proxy 0.90
    worse = GroupFigures(positives=1000, false_positives=200)  # proxy 0.80: -11.1 %
    rep = _alerts(worse, ref)
    assert [a.severity for a in rep.alerts] == ["P1"]
    assert rep.alerts[0].evidence["drop"] == pytest.approx(0.1 / 0.9)
    slightly = GroupFigures(positives=1000, false_positives=180)  # proxy 0.82: -8.9 %
    assert _alerts(slightly, ref).alerts == []
    assert _alerts(GroupFigures(positives=50, false_positives=40), ref).alerts == []  # too few positives


def test_drift_p2_p3_status_and_retraining_trigger() -> None:
    mild = _alerts(GroupFigures(inferences=5000, input_hist={0: _hist(0.35)}))
    assert mild.drift.status == "investigate" and mild.alerts == []  # PSI 0.108: no alert yet
    sig = _alerts(GroupFigures(inferences=5000, input_hist={0: _hist(0.55)}))
    psi = sig.drift.features[0].psi
    assert sig.drift.status == "significant" and sig.drift.alert
    assert 0.2 < psi <= 0.3 and [a.severity for a in sig.alerts] == ["P3"]
    assert sig.retraining_trigger is not None and "input drift" in sig.retraining_trigger.reasons[0]
    strong = _alerts(GroupFigures(inferences=5000, input_hist={0: _hist(1.0)}))
    assert [a.severity for a in strong.alerts] == ["P2"] and strong.alerts[0].evidence["psi"] > 0.3
    thin = _alerts(GroupFigures(inferences=100, input_hist={0: _hist(1.0, n=100)}))
    assert thin.drift.status == "no_data" and thin.alerts == []


def test_kws_retraining_trigger_false_wakes_and_battery() -> None:
    fig = GroupFigures(inferences=100_000, positives=3000, false_positives=1500, battery_drain_pct_per_h=6.0)
    rep = _alerts(fig, battery_drain_spec_pct_per_h=5.0)
    reasons = rep.retraining_trigger.reasons
    assert any("false-wake rate 1.50%" in r for r in reasons) and any("battery drain" in r for r in reasons)
    assert rep.retraining_trigger.evidence["false_wake_rate"] == pytest.approx(0.015)
    ok = GroupFigures(inferences=100_000, positives=3000, false_positives=900, battery_drain_pct_per_h=4.0)
    assert _alerts(ok, battery_drain_spec_pct_per_h=5.0).retraining_trigger is None


def test_figures_from_a_simulated_canary() -> None:
    sim = SimFleet(seed=21, n=200, candidate=Behaviour(error_rate=0.01, input_shift=1.0))
    run = Run(sim, sim.spec())
    for _ in range(3):
        run.step()
    g = groups(run.state, run.fleet)
    fig = GroupFigures.of(run.totals(), g.commanded)
    ctrl = GroupFigures.of(run.totals(), g.control)
    rep = evaluate_alerts("kws", "1.7.0", "canary", fig, run.now, reference=ctrl, baseline=sim.baseline)
    assert {a.severity for a in rep.alerts} >= {"P0", "P2"}
    assert evaluate_alerts("kws", "1.6.0", "control", ctrl, run.now, baseline=sim.baseline).alerts == []


# ----------------------------------------------------------------------------- retraining


def test_optimal_interval_chapter_example() -> None:
    # Chapter's fraud example: C = 5,000, Q = 1,000,000/day, V = 0.50, A0 = 0.95, lambda = 0.02/day
    # T* = sqrt(10,000 / 9,500) = 1.026 days.
    assert optimal_interval(5000, 1_000_000, 0.5, 0.95, 0.02) == pytest.approx(1.02598, rel=1e-4)
    # square-root law: 4x the cost -> 2x the interval
    assert optimal_interval(20_000, 1_000_000, 0.5, 0.95, 0.02) == pytest.approx(2 * 1.02598, rel=1e-4)


def test_decay_fit_recovers_known_lambda() -> None:
    rng = np.random.default_rng(5)
    days = np.arange(0, 60, 1.0)
    lam, a0 = 0.015, 0.97
    proxy = a0 * np.exp(-lam * days) * np.exp(rng.normal(0, 0.003, days.size))  # 0.3 % noise
    fit = fit_decay(days, proxy)
    assert fit.lam == pytest.approx(lam, rel=0.05) and fit.a0 == pytest.approx(a0, rel=0.01)
    assert fit.r2 > 0.95
    est = estimate(c=200.0, q=50_000, v=0.01, days=days, proxy=proxy)
    assert est.t_star_days == pytest.approx(math.sqrt(2 * 200 / (50_000 * 0.01 * fit.a0 * fit.lam)))
    # exact data: exact fit
    exact = fit_decay([0, 10, 20], [0.9, 0.9 * math.exp(-0.2), 0.9 * math.exp(-0.4)])
    assert exact.lam == pytest.approx(0.02) and exact.a0 == pytest.approx(0.9)


def test_no_decay_gives_no_interval() -> None:
    est = estimate(100, 1000, 1, [0, 1, 2, 3], [0.9, 0.91, 0.9, 0.91])
    assert est.t_star_days is None and est.lam <= 0


@pytest.mark.parametrize(
    ("days", "proxy", "message"),
    [
        ([0, 1], [0.9, 0.8], "at least 3 points"),
        ([0, 1, 2], [0.9, 0.0, 0.8], r"in \(0, 1\]"),
        ([0, 1, 2], [0.9, 1.2, 0.8], r"in \(0, 1\]"),
        ([1, 1, 1], [0.9, 0.8, 0.7], "same time"),
        ([0, 1, float("nan")], [0.9, 0.8, 0.7], "finite"),
        ([0, 1, 2], [0.9, 0.8], "equal length"),
    ],
)
def test_fit_bad_input(days, proxy, message: str) -> None:
    with pytest.raises(RetrainingInputError, match=message):
        fit_decay(days, proxy)


def test_interval_bad_input() -> None:
    with pytest.raises(RetrainingInputError, match="lambda must be a positive number"):
        optimal_interval(1, 1, 1, 0.9, 0.0)
    with pytest.raises(RetrainingInputError, match="C must be"):
        optimal_interval(-1, 1, 1, 0.9, 0.1)
