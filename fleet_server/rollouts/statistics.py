"""The statistics behind the false-positive gate. Standard library only (``statistics.NormalDist``).

* One-sided two-proportion z-test, pooled standard error:
  p1 = x1/n1 (cohort), p2 = x2/n2 (control), p = (x1+x2)/(n1+n2),
  SE = sqrt(p (1-p) (1/n1 + 1/n2)),  z = (p1 - p2) / SE,  p-value = 1 - Phi(z)  (H1: p1 > p2).
* Required sample size per group (ML Operations chapter, eq-ab-sample-size):
  n = 2 (z_{alpha/2} + z_beta)^2 sigma^2 / delta^2,  sigma^2 = p (1-p) at the control rate,
  delta = the minimum detectable increase. z_{alpha/2} makes it the two-sided figure: for the one-sided
  test it is conservative (slightly more samples than strictly needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_N = NormalDist()


def z_quantile(q: float) -> float:
    """z with Phi(z) = q (scipy.stats.norm.ppf)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    return _N.inv_cdf(q)


@dataclass(frozen=True)
class ZTest:
    p1: float
    p2: float
    pooled: float
    se: float
    z: float
    p_value: float  # one-sided, H1: p1 > p2

    def significant(self, alpha: float) -> bool:
        return self.p_value < alpha


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> ZTest:
    """Is the cohort's rate x1/n1 larger than the control's x2/n2? One-sided, pooled SE."""
    for name, x, n in (("cohort", x1, n1), ("control", x2, n2)):
        if n <= 0:
            raise ValueError(f"{name} has no trials (n={n})")
        if not 0 <= x <= n:
            raise ValueError(f"{name} successes {x} outside 0..{n}")
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:  # both rates 0 or both 1: no evidence of a difference
        return ZTest(p1, p2, pooled, 0.0, 0.0, 0.5 if p1 == p2 else (0.0 if p1 > p2 else 1.0))
    z = (p1 - p2) / se
    return ZTest(p1, p2, pooled, se, z, 1.0 - _N.cdf(z))


def required_sample_size(p_control: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """n per group = ceil(2 (z_{alpha/2} + z_beta)^2 p(1-p) / delta^2)."""
    if not 0.0 <= p_control <= 1.0:
        raise ValueError(f"control rate must be in [0, 1], got {p_control}")
    if delta <= 0:
        raise ValueError(f"minimum detectable increase must be > 0, got {delta}")
    # A control rate of exactly 0 would need no samples at all; use the rate delta above it instead.
    p = p_control if 0.0 < p_control < 1.0 else min(max(delta, 1e-12), 1 - 1e-12)
    z_a = z_quantile(1 - alpha / 2)
    z_b = z_quantile(power)
    return math.ceil(2 * (z_a + z_b) ** 2 * p * (1 - p) / delta**2)
