"""Drift statistics on histograms (counts over the SAME bins): PSI, KS statistic, Jensen-Shannon. numpy only.

Definitions (see docs/telemetry.md; thresholds from the ML Operations chapter, "Quantifying Drift: The
Physics of PSI", tbl-feature-distribution-thresholds and the P2 row of the incident-severity table):

* proportions  p_i = c_i / sum(c)  (inputs may be counts or proportions; both are normalised)
* PSI  = sum_i (a_i - e_i) * ln(a_i / e_i),  with a_i, e_i floored at EPSILON = 1e-4 so empty bins are
  finite (a bin empty on both sides contributes exactly 0). Natural log, as in eq-psi.
  PSI < 0.1 stable, 0.1 <= PSI <= 0.2 investigate, PSI > 0.2 significant; PSI > 0.3 on one feature is a
  P2 incident ("moderate drift, localized impact").
* KS   = max_k |E_k - A_k| over the bin boundaries, E/A the cumulative proportions. On binned data this is
  a lower bound of the two-sample KS statistic of the raw values. Alert when KS > 0.1.
* JS   = 1/2 KL(e || m) + 1/2 KL(a || m), m = (e + a) / 2, log base 2, so 0 <= JS <= 1; no epsilon needed
  (0 * log 0 = 0 and m_i > 0 wherever e_i or a_i is). This is the divergence, not the distance
  (scipy's ``jensenshannon`` returns the square root, natural log by default). Alert when JS > 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

import numpy as np

EPSILON: Final = 1e-4  # floor for proportions inside PSI's log ratio
PSI_INVESTIGATE: Final = 0.1
PSI_SIGNIFICANT: Final = 0.2
PSI_P2_ALERT: Final = 0.3
KS_ALERT: Final = 0.1
JS_ALERT: Final = 0.1
MAX_BINS: Final = 1024

DriftStatus = Literal["stable", "investigate", "significant"]
FeatureStatus = Literal["stable", "investigate", "significant", "no_data"]
_SEVERITY: Final = {"no_data": -1, "stable": 0, "investigate": 1, "significant": 2}


class DriftInputError(ValueError):
    """Histograms that cannot be compared: wrong shape, negative/non-finite, different bin counts, empty."""


def proportions(counts: Sequence[float] | np.ndarray, what: str = "histogram") -> np.ndarray:
    """Validate a 1-D histogram (counts or proportions) and normalise it to sum 1."""
    try:
        arr = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DriftInputError(f"{what} is not numeric: {exc}") from None
    if arr.ndim != 1:
        raise DriftInputError(f"{what} must be 1-D, got shape {arr.shape}")
    if not 1 <= arr.size <= MAX_BINS:
        raise DriftInputError(f"{what} must have 1..{MAX_BINS} bins, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise DriftInputError(f"{what} contains NaN or infinity")
    if np.any(arr < 0):
        raise DriftInputError(f"{what} contains negative counts")
    total = float(arr.sum())
    if total <= 0.0:
        raise DriftInputError(f"{what} is empty (all bins zero)")
    return arr / total


def _pair(
    expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    e = proportions(expected, "expected (baseline) histogram")
    a = proportions(actual, "actual (observed) histogram")
    if e.size != a.size:
        raise DriftInputError(f"histograms have different bin counts: expected {e.size}, actual {a.size}")
    return e, a


def psi(
    expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, eps: float = EPSILON
) -> float:
    """Population Stability Index of ``actual`` against the ``expected`` (baseline) histogram."""
    if not 0.0 < eps < 1.0:
        raise DriftInputError(f"eps must be in (0, 1), got {eps}")
    e, a = _pair(expected, actual)
    e = np.maximum(e, eps)
    a = np.maximum(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_statistic(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Largest gap between the two cumulative distributions, evaluated at the bin edges."""
    e, a = _pair(expected, actual)
    return float(np.max(np.abs(np.cumsum(e) - np.cumsum(a))))


def js_divergence(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Jensen-Shannon divergence, log base 2 (bits), in [0, 1]."""
    e, a = _pair(expected, actual)
    m = 0.5 * (e + a)

    def kl_to_m(p: np.ndarray) -> float:
        nz = p > 0  # 0 * log(0 / m) = 0 by convention
        return float(np.sum(p[nz] * np.log2(p[nz] / m[nz])))

    # Clamp float noise: JS of identical histograms can come out as -1e-17.
    return min(1.0, max(0.0, 0.5 * kl_to_m(e) + 0.5 * kl_to_m(a)))


def drift_status(psi_value: float) -> DriftStatus:
    """PSI < 0.1 stable; 0.1 <= PSI <= 0.2 investigate; PSI > 0.2 significant."""
    if not isinstance(psi_value, (int, float)) or isinstance(psi_value, bool) or math.isnan(psi_value):
        raise DriftInputError(f"PSI must be a number, got {psi_value!r}")
    if psi_value < PSI_INVESTIGATE:
        return "stable"
    if psi_value <= PSI_SIGNIFICANT:
        return "investigate"
    return "significant"


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    status: FeatureStatus  # from PSI; "no_data" when the observed histogram is empty
    psi: float | None
    ks: float | None
    js: float | None
    ks_alert: bool  # KS > 0.1
    js_alert: bool  # JS > 0.1
    p2_alert: bool  # PSI > 0.3
    n_expected: float
    n_observed: float


@dataclass(frozen=True)
class DriftReport:
    features: tuple[FeatureDrift, ...]
    status: FeatureStatus  # worst feature status; "no_data" only when no feature had data
    p2_alert: bool  # at least one feature with PSI > 0.3
    drifting: tuple[str, ...]  # features with status "significant" or a KS/JS alert

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_drift(
    name: str, expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray
) -> FeatureDrift:
    """All three statistics for one feature; an all-zero observed histogram gives status "no_data"."""
    e = proportions(expected, f"baseline histogram of {name!r}")  # the baseline must be valid regardless
    n_exp = float(np.sum(np.asarray(expected, dtype=np.float64)))
    try:
        act = np.asarray(actual, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DriftInputError(f"observed histogram of {name!r} is not numeric: {exc}") from None
    if act.shape == e.shape and np.all(act == 0):
        return FeatureDrift(name, "no_data", None, None, None, False, False, False, n_exp, 0.0)
    exp = np.asarray(expected, dtype=np.float64)
    n_act = float(act.sum())
    p = psi(exp, act)
    k = ks_statistic(exp, act)
    j = js_divergence(exp, act)
    return FeatureDrift(
        name=name,
        status=drift_status(p),
        psi=p,
        ks=k,
        js=j,
        ks_alert=k > KS_ALERT,
        js_alert=j > JS_ALERT,
        p2_alert=p > PSI_P2_ALERT,
        n_expected=n_exp,
        n_observed=n_act,
    )


def drift_report(
    baseline: Mapping[str, Sequence[float] | np.ndarray], observed: Mapping[str, Sequence[float] | np.ndarray]
) -> DriftReport:
    """Per-feature drift of ``observed`` against ``baseline`` for every feature present in ``observed``.

    Features observed but missing from the baseline are an error (different model or bins).
    """
    unknown = sorted(set(observed) - set(baseline))
    if unknown:
        raise DriftInputError(f"no baseline histogram for feature(s): {', '.join(map(str, unknown))}")
    features = tuple(feature_drift(name, baseline[name], observed[name]) for name in observed)
    with_data = [f for f in features if f.status != "no_data"]
    status: FeatureStatus = (
        max((f.status for f in with_data), key=lambda s: _SEVERITY[s]) if with_data else "no_data"
    )
    return DriftReport(
        features=features,
        status=status,
        p2_alert=any(f.p2_alert for f in features),
        drifting=tuple(f.name for f in features if f.status == "significant" or f.ks_alert or f.js_alert),
    )
