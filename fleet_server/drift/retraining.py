"""T*, the retraining interval of a model, with lambda fitted from its stored telemetry.

The law and the fit are fleet_server.rollouts.retraining (``fit_decay``, ``optimal_interval``); this
module builds the accuracy-proxy series from ``telemetry_windows`` (one SQL GROUP BY per bucket) and
fills in what the operator did not give.

Symbols (ML Operations chapter, eq-optimal-retrain):

* A(t) = A0 * exp(-lambda * t), t in days since the release was created;
* A0, lambda: fitted by least squares on ln A(t) over buckets of ``bucket_days``;
* the accuracy proxy per bucket: ``precision`` = 1 - false_positives / positives (default, what device
  feedback measures; the P1 alert uses it too) or ``false_wake`` = 1 - false_positives / inferences;
* Q: queries (inferences) per day; the operator's figure, or the observed fleet rate when not given;
* C: cost of one retraining run; V: value of one accuracy point per query (same currency);
* T* = sqrt(2 C / (Q V A0 lambda)) days. No decay observed (lambda <= 0): no T*.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fleet_server.db.releases import Release
from fleet_server.db.telemetry import TelemetryWindow as W
from fleet_server.rollouts.retraining import RetrainingInputError, fit_decay, optimal_interval
from fleet_server.telemetry_queries import NotFoundError, QueryError, from_unix, require_model, unix

Proxy = Literal["precision", "false_wake"]

SYMBOLS: dict[str, str] = {
    "A(t)": "accuracy proxy t days after the release: A0 * exp(-lambda * t)",
    "A0": "fitted accuracy proxy right after the release (0..1)",
    "lambda": "fitted decay rate of the accuracy proxy, per day",
    "C": "cost of one retraining run (operator's currency)",
    "Q": "queries (inferences) per day across the fleet",
    "V": "value of one accuracy point per query (same currency as C)",
    "T*": "sqrt(2 C / (Q V A0 lambda)): retraining interval in days minimising staleness loss + cost",
    "half_life_days": "ln 2 / lambda: days until the fitted proxy falls to A0 / 2",
}


class ProxyPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket_start: dt.datetime
    t_days: float
    proxy: float | None  # None: too few counts in the bucket, not used in the fit
    inferences: int
    positives: int
    false_positives: int


class DecayFitOut(BaseModel):
    model_config = ConfigDict(frozen=True)

    lam: float
    a0: float
    r2: float
    points: int


class RetrainingReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    version: int
    release_id: str
    proxy: Proxy
    range_start: dt.datetime
    range_end: dt.datetime
    bucket_days: float
    series: list[ProxyPoint]
    fit: DecayFitOut | None
    c: float | None
    q: float | None
    q_source: Literal["operator", "observed", "none"]
    v: float | None
    t_star_days: float | None
    half_life_days: float | None
    note: str
    symbols: dict[str, str]


def retraining_report(
    session: Session,
    model_name: str,
    *,
    now: dt.datetime,
    version: int | None = None,
    c: float | None = None,
    q: float | None = None,
    v: float | None = None,
    days: float = 30.0,
    bucket_days: float = 1.0,
    proxy: Proxy = "precision",
    min_count: int = 50,
) -> RetrainingReport:
    for name, x in (("c", c), ("q", q), ("v", v)):
        if x is not None and (not math.isfinite(x) or x <= 0):
            raise QueryError(f"{name.upper()} must be a positive finite number, got {x}")
    if not (math.isfinite(days) and days > 0 and math.isfinite(bucket_days) and bucket_days > 0):
        raise QueryError("days and bucket_days must be positive finite numbers")
    if days / bucket_days > 10_000:
        raise QueryError(f"{days / bucket_days:.0f} buckets requested; at most 10000")
    require_model(session, model_name)
    if version is None:
        release = session.scalar(
            select(Release).where(Release.model_name == model_name).order_by(Release.counter.desc()).limit(1)
        )
        if release is None:
            raise NotFoundError(f"model {model_name!r} has no release yet")
    else:
        release = require_model(session, model_name, version)
        assert release is not None
    end_s = unix(now)
    origin_s = unix(release.created_at)  # t = 0: the release (the model's "training" in the field)
    start_s = max(end_s - math.ceil(days * 86_400), origin_s)
    bucket_s = max(1, round(bucket_days * 86_400))
    bucket = (W.window_start_s - (W.window_start_s - origin_s) % bucket_s).label("bucket")
    rows = session.execute(
        select(bucket, func.sum(W.inferences), func.sum(W.positives), func.sum(W.false_positives))
        .where(
            W.model_name == model_name,
            W.model_version == release.counter,
            W.window_start_s >= start_s,
            W.window_start_s < end_s,
        )
        .group_by(bucket)
        .order_by(bucket)
    ).all()
    series: list[ProxyPoint] = []
    for b, inf, pos, fps in rows:
        inf, pos, fps = int(inf or 0), int(pos or 0), int(fps or 0)
        den = pos if proxy == "precision" else inf
        value = 1.0 - fps / den if den >= min_count else None
        series.append(
            ProxyPoint(
                bucket_start=from_unix(int(b)),
                # the bucket's middle, in days since the origin (the release, when inside the range)
                t_days=(int(b) + bucket_s / 2 - origin_s) / 86_400,
                proxy=value if value is not None and value > 0 else None,
                inferences=inf,
                positives=pos,
                false_positives=fps,
            )
        )
    usable = [p for p in series if p.proxy is not None]
    notes: list[str] = []
    fit_out: DecayFitOut | None = None
    t_star = half_life = None
    try:
        fit = fit_decay([p.t_days for p in usable], [p.proxy for p in usable])  # type: ignore[misc]
        fit_out = DecayFitOut(lam=fit.lam, a0=fit.a0, r2=fit.r2, points=fit.points)
    except RetrainingInputError as exc:
        notes.append(f"no fit: {exc} (buckets with at least {min_count} counts: {len(usable)})")
    q_source: Literal["operator", "observed", "none"] = "operator" if q is not None else "none"
    if q is None and series:
        span_days = (end_s - max(start_s, int(series[0].bucket_start.timestamp()))) / 86_400
        observed = sum(p.inferences for p in series) / span_days if span_days > 0 else 0.0
        if observed > 0:
            q, q_source = observed, "observed"
    if fit_out is not None:
        if fit_out.lam <= 0:
            notes.append("no decay observed (lambda <= 0): no retraining interval")
        else:
            half_life = math.log(2) / fit_out.lam
            if c is None or v is None:
                notes.append("give C and V to get T*")
            elif q is None:
                notes.append("no Q given and no inferences observed")
            else:
                t_star = optimal_interval(c, q, v, fit_out.a0, fit_out.lam)
    return RetrainingReport(
        model=model_name,
        version=release.counter,
        release_id=release.id,
        proxy=proxy,
        range_start=from_unix(start_s),
        range_end=from_unix(end_s),
        bucket_days=bucket_days,
        series=series,
        fit=fit_out,
        c=c,
        q=q,
        q_source=q_source,
        v=v,
        t_star_days=t_star,
        half_life_days=half_life,
        note="; ".join(notes),
        symbols=SYMBOLS,
    )
