"""When to retrain: the chapter's square-root law with the decay rate fitted from telemetry.

Symbols (ML Operations chapter, eq-optimal-retrain, "The Half-Life of a Model"):

* A(t) = A0 * exp(-lambda * t): the accuracy proxy decays exponentially after (re)training;
* A0     initial accuracy (proxy) right after training, 0..1;
* lambda decay rate per day (fitted here: least squares of ln A(t) = ln A0 - lambda * t);
* Q      queries (inferences) per day across the fleet;
* V      value of one accuracy point (currency per point per query, the operator's figure);
* C      fixed cost of one retraining run (same currency);
* T*     = sqrt(2 C / (Q V A0 lambda)), in days: the interval minimising staleness loss + retraining cost.

The accuracy proxy on devices is typically 1 - false-positive rate (per window or per day).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class RetrainingInputError(ValueError):
    """Series or economic figures that cannot give a fit or an interval."""


class DecayFit(BaseModel):
    model_config = ConfigDict(frozen=True)

    lam: float  # per day; <= 0 means no decay observed
    a0: float
    r2: float  # of the log-linear fit
    points: int


class RetrainingEstimate(BaseModel):
    model_config = ConfigDict(frozen=True)

    t_star_days: float | None  # None when no decay was observed
    lam: float
    a0: float
    c: float = Field(description="cost of one retraining run")
    q: float = Field(description="queries per day")
    v: float = Field(description="value of one accuracy point")
    fit: DecayFit | None = None


def fit_decay(days: Sequence[float], proxy: Sequence[float]) -> DecayFit:
    """Least-squares fit of ln(proxy) = ln(A0) - lambda * t. ``proxy`` values must be in (0, 1]."""
    t = np.asarray(days, dtype=np.float64)
    a = np.asarray(proxy, dtype=np.float64)
    if t.shape != a.shape or t.ndim != 1:
        raise RetrainingInputError(
            f"days and proxy values must be 1-D of equal length, got {t.shape}, {a.shape}"
        )
    if t.size < 3:
        raise RetrainingInputError(f"need at least 3 points to fit a decay, got {t.size}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(a))):
        raise RetrainingInputError("days and proxy values must be finite")
    if np.any(a <= 0) or np.any(a > 1):
        raise RetrainingInputError("accuracy proxy values must be in (0, 1]")
    if np.ptp(t) == 0:
        raise RetrainingInputError("all points are at the same time; no decay can be fitted")
    y = np.log(a)
    slope, intercept = np.polyfit(t, y, 1)
    resid = y - (slope * t + intercept)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return DecayFit(lam=float(-slope), a0=float(math.exp(intercept)), r2=r2, points=int(t.size))


def optimal_interval(c: float, q: float, v: float, a0: float, lam: float) -> float:
    """T* = sqrt(2 C / (Q V A0 lambda)) in the time unit of lambda and Q (days)."""
    for name, x in (("C", c), ("Q", q), ("V", v), ("A0", a0), ("lambda", lam)):
        if not math.isfinite(x) or x <= 0:
            raise RetrainingInputError(f"{name} must be a positive number, got {x}")
    return math.sqrt(2 * c / (q * v * a0 * lam))


def estimate(
    c: float, q: float, v: float, days: Sequence[float], proxy: Sequence[float]
) -> RetrainingEstimate:
    """Fit lambda and A0 from an accuracy-proxy series and return T* (None when nothing decays)."""
    fit = fit_decay(days, proxy)
    t_star = optimal_interval(c, q, v, fit.a0, fit.lam) if fit.lam > 0 else None
    return RetrainingEstimate(t_star_days=t_star, lam=fit.lam, a0=fit.a0, c=c, q=q, v=v, fit=fit)
