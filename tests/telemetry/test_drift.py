"""Drift statistics against hand-computed values, the chapter's worked example and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from telemetry.drift import (
    EPSILON,
    DriftInputError,
    drift_report,
    drift_status,
    feature_drift,
    js_divergence,
    ks_statistic,
    psi,
)

PROPERTY = settings(max_examples=100, deadline=None, derandomize=True)


def test_psi_matches_the_chapters_worked_example() -> None:
    # ML Operations chapter, "Quantifying Drift": age bins, training % vs serving %.
    # (a-e)*ln(a/e) per bin:
    #   (.12-.15)*ln(.12/.15) = -.03*-.22314355 = .00669431
    #   (.22-.25)*ln(.88)     = -.03*-.12783337 = .00383500
    #   (.18-.20)*ln(.90)     = -.02*-.10536052 = .00210721
    #   (.20-.18)*ln(20/18)   =  .02* .10536052 = .00210721
    #   (.15-.12)*ln(1.25)    =  .03* .22314355 = .00669431
    #   (.13-.10)*ln(1.30)    =  .03* .26236426 = .00787093
    # sum = .02930897 -> "0.029 (Stable)" in the chapter.
    training = [15, 25, 20, 18, 12, 10]
    serving = [12, 22, 18, 20, 15, 13]
    value = psi(training, serving)
    assert value == pytest.approx(0.02930897, abs=1e-8)
    assert drift_status(value) == "stable"


def test_psi_two_bin_shifts_by_hand() -> None:
    # e = [.5, .5]; a = [.8, .2]: .3*ln(1.6) + (-.3)*ln(.4) = .3*.47000363 + .3*.91629073 = .41588831
    assert psi([50, 50], [80, 20]) == pytest.approx(0.41588831, abs=1e-8)
    # a = [.7, .3]: .2*ln(1.4) + .2*ln(1/.6) = .2*.33647224 + .2*.51082562 = .16945957
    assert psi([50, 50], [70, 30]) == pytest.approx(0.16945957, abs=1e-8)


def test_psi_empty_bins_use_the_documented_epsilon() -> None:
    # e = [.5, .5, 0] -> [.5, .5, 1e-4];  a = [.5, 0, .5] -> [.5, 1e-4, .5]
    # bin 2: (1e-4 - .5)*ln(1e-4/.5) = -.4999*ln(2e-4) = .4999*8.51719319 = 4.25774488
    # bin 3: (.5 - 1e-4)*ln(.5/1e-4) = .4999*ln(5000)  = 4.25774488          -> total 8.51548976
    assert EPSILON == 1e-4
    assert psi([50, 50, 0], [50, 0, 50]) == pytest.approx(8.51548976, abs=1e-7)
    # A bin empty on both sides contributes exactly nothing.
    assert psi([10, 0, 10], [10, 0, 10]) == 0.0
    assert psi([50, 50, 0], [80, 20, 0]) == pytest.approx(0.41588831, abs=1e-8)


def test_ks_statistic_by_hand() -> None:
    # e = [1,1,2] -> cdf [.25,.5,1];  a = [2,1,1] -> cdf [.5,.75,1];  max gap .25
    assert ks_statistic([1, 1, 2], [2, 1, 1]) == pytest.approx(0.25)
    # chapter example: cdfs [.15,.40,.60,.78,.90,1] vs [.12,.34,.52,.72,.87,1]: gaps .03,.06,.08,.06,.03
    assert ks_statistic([15, 25, 20, 18, 12, 10], [12, 22, 18, 20, 15, 13]) == pytest.approx(0.08)


def test_js_divergence_by_hand_log_base_2() -> None:
    # Disjoint support: m = [.5,.5], KL(p||m) = 1*log2(2) = 1 for both halves -> JS = 1 (the maximum in bits).
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    # e = [1,0], a = [.5,.5]: m = [.75,.25]
    #   KL(e||m) = log2(1/.75) = .41503750;  KL(a||m) = .5*log2(.5/.75) + .5*log2(.5/.25) = .20751875
    #   JS = .5*(.41503750 + .20751875) = .31127812
    assert js_divergence([10, 0], [5, 5]) == pytest.approx(0.31127812, abs=1e-8)
    assert js_divergence([3, 7, 0], [3, 7, 0]) == 0.0


def test_ks_agrees_with_scipy_on_discrete_samples() -> None:
    # When the raw values sit exactly on the bins (integers 0..5), the binned KS is the two-sample KS.
    rng = np.random.default_rng(7)
    x = rng.integers(0, 6, size=400)
    y = np.minimum(rng.integers(0, 6, size=300) + rng.integers(0, 2, size=300), 5)
    hx, hy = np.bincount(x, minlength=6), np.bincount(y, minlength=6)
    assert ks_statistic(hx, hy) == pytest.approx(ks_2samp(x, y).statistic, abs=1e-12)


@PROPERTY
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=16), st.data())
def test_js_agrees_with_scipy_and_bounds_hold(expected: list[int], data: st.DataObject) -> None:
    actual = data.draw(st.lists(st.integers(0, 1000), min_size=len(expected), max_size=len(expected)))
    if sum(expected) == 0 or sum(actual) == 0:
        with pytest.raises(DriftInputError):
            psi(expected, actual)
        return
    j = js_divergence(expected, actual)
    assert j == pytest.approx(
        jensenshannon(expected, actual, base=2) ** 2, abs=1e-9
    )  # scipy gives the distance
    assert 0.0 <= j <= 1.0
    assert 0.0 <= ks_statistic(expected, actual) <= 1.0
    p = psi(expected, actual)
    assert p >= 0.0
    assert p == pytest.approx(psi(actual, expected))  # PSI is symmetric
    # Counts and proportions are the same histogram.
    assert p == pytest.approx(psi(np.array(expected) / sum(expected), actual))


def test_drift_status_thresholds() -> None:
    assert drift_status(0.0) == "stable"
    assert drift_status(0.0999) == "stable"
    assert drift_status(0.1) == "investigate"
    assert drift_status(0.2) == "investigate"
    assert drift_status(0.2001) == "significant"
    for bad in (math.nan, "0.1", None, True):
        with pytest.raises(DriftInputError):
            drift_status(bad)  # type: ignore[arg-type]


def test_drift_report_per_feature_and_p2_alert() -> None:
    baseline = {"rms": [50, 50], "zcr": [50, 50], "score": [25, 25, 25, 25], "silent": [1, 1]}
    observed = {"rms": [80, 20], "zcr": [70, 30], "score": [24, 26, 25, 25], "silent": [0, 0]}
    report = drift_report(baseline, observed)
    by_name = {f.name: f for f in report.features}
    assert by_name["rms"].status == "significant" and by_name["rms"].p2_alert  # PSI .416 > .3
    assert by_name["zcr"].status == "investigate" and not by_name["zcr"].p2_alert  # PSI .169
    assert by_name["score"].status == "stable" and not by_name["score"].ks_alert
    assert by_name["silent"].status == "no_data" and by_name["silent"].psi is None
    assert by_name["rms"].ks == pytest.approx(0.3) and by_name["rms"].ks_alert
    assert report.status == "significant" and report.p2_alert
    assert set(report.drifting) == {"rms", "zcr"}  # zcr: KS = .2 > .1 although PSI only says investigate
    assert report.to_dict()["features"][0]["name"] == "rms"
    quiet = drift_report(baseline, {"silent": [0, 0]})
    assert quiet.status == "no_data" and not quiet.p2_alert


@pytest.mark.parametrize(
    ("expected", "actual", "needle"),
    [
        ([1, 2, 3], [1, 2], "different bin counts"),
        ([1, -2], [1, 2], "negative"),
        ([1, math.nan], [1, 2], "NaN"),
        ([1, 2], [math.inf, 2], "NaN or infinity"),
        ([[1, 2], [3, 4]], [1, 2, 3, 4], "1-D"),
        ([0, 0], [1, 2], "empty"),
        ([], [], "bins"),
        (["a", "b"], [1, 2], "not numeric"),
    ],
)
def test_bad_histograms_are_named_errors(expected: object, actual: object, needle: str) -> None:
    for fn in (psi, ks_statistic, js_divergence):
        with pytest.raises(DriftInputError, match=needle):
            fn(expected, actual)  # type: ignore[arg-type]


def test_report_rejects_features_without_baseline_and_bad_baselines() -> None:
    with pytest.raises(DriftInputError, match="no baseline histogram for feature"):
        drift_report({"a": [1, 1]}, {"b": [1, 1]})
    with pytest.raises(DriftInputError, match="empty"):
        feature_drift("a", [0, 0], [0, 0])  # an empty baseline is broken even when nothing was observed
    with pytest.raises(DriftInputError, match="eps"):
        psi([1, 1], [1, 1], eps=0.0)
