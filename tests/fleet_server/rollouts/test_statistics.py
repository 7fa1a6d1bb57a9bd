"""The FP gate's statistics against hand-computed values and scipy.stats."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from fleet_server.rollouts.statistics import required_sample_size, two_proportion_z_test, z_quantile


def test_z_test_hand_computed() -> None:
    # 30/1000 vs 20/1000: pooled p = 0.025, SE = sqrt(0.025 * 0.975 * 0.002) = 0.0069821,
    # z = 0.01 / 0.0069821 = 1.43223, one-sided p = 1 - Phi(1.43223) = 0.07604 (normal table).
    t = two_proportion_z_test(30, 1000, 20, 1000)
    assert t.pooled == pytest.approx(0.025)
    assert t.se == pytest.approx(0.0069821, rel=1e-4)
    assert t.z == pytest.approx(1.43223, rel=1e-4)
    assert t.p_value == pytest.approx(0.07604, abs=5e-5)
    assert not t.significant(0.05)
    assert t.significant(0.10)


@given(
    n1=st.integers(10, 10**6),
    n2=st.integers(10, 10**6),
    f1=st.floats(0.0, 1.0),
    f2=st.floats(0.0, 1.0),
)
def test_z_test_matches_direct_scipy_computation(n1: int, n2: int, f1: float, f2: float) -> None:
    x1, x2 = round(f1 * n1), round(f2 * n2)
    t = two_proportion_z_test(x1, n1, x2, n2)
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        assert t.z == 0.0
        return
    z = (x1 / n1 - x2 / n2) / se
    assert t.z == pytest.approx(z, rel=1e-9, abs=1e-12)
    assert t.p_value == pytest.approx(stats.norm.sf(z), rel=1e-6, abs=1e-12)


def test_z_quantile_matches_scipy() -> None:
    for q in (0.5, 0.8, 0.9, 0.95, 0.975, 0.995, 0.001):
        assert z_quantile(q) == pytest.approx(stats.norm.ppf(q), rel=1e-9)


def test_sample_size_hand_computed() -> None:
    # p = 0.10, delta = 0.05, alpha = 0.05 (z = 1.959964), power 0.8 (z = 0.841621):
    # 2 * (2.801585)^2 * 0.09 / 0.0025 = 565.13 -> 566 per group.
    assert required_sample_size(0.10, 0.05, alpha=0.05, power=0.8) == 566
    # Halving delta quadruples n (up to rounding); more power needs more samples.
    assert required_sample_size(0.10, 0.025) == pytest.approx(4 * 565.13, abs=2)
    assert required_sample_size(0.10, 0.05, power=0.9) > 566


@given(
    p=st.floats(0.001, 0.5),
    delta=st.floats(0.0005, 0.2),
    alpha=st.floats(0.001, 0.2),
    power=st.floats(0.55, 0.99),
)
def test_sample_size_matches_scipy_formula(p: float, delta: float, alpha: float, power: float) -> None:
    expected = 2 * (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) ** 2 * p * (1 - p) / delta**2
    n = required_sample_size(p, delta, alpha, power)
    assert expected <= n < expected + 1 + 1e-6 * expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((5, 0, 1, 10), "cohort has no trials"),
        ((1, 10, 11, 10), "control successes 11 outside"),
        ((-1, 10, 1, 10), "cohort successes -1"),
    ],
)
def test_z_test_bad_input(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        two_proportion_z_test(*args)


def test_sample_size_bad_input() -> None:
    with pytest.raises(ValueError, match="minimum detectable increase"):
        required_sample_size(0.1, 0.0)
    with pytest.raises(ValueError, match="control rate"):
        required_sample_size(1.5, 0.1)
    with pytest.raises(ValueError, match="quantile"):
        required_sample_size(0.1, 0.1, alpha=2.5)
