"""Alerts with the ML Operations chapter's severities, drift status, and the retraining trigger.

Severities (chapter, tbl-incident-severity; response time in brackets):

* P0 [15 min] complete model failure, serving errors: invoke failures, null / non-finite outputs
  (error rate above ``p0_error_rate``, or errors and no successful inference at all);
* P1 [1 h] accuracy-proxy degradation > 10 %: the proxy is the precision of positive decisions,
  1 - false_positives / positives (what device feedback measures), relative to a reference group
  (the control group or the previous version);
* P2 [4 h] moderate drift, localised impact: one feature with PSI > 0.3;
* P3 [24 h] minor anomalies: significant drift below the P2 line (0.2 < PSI <= 0.3), KS/JS alerts,
  serving errors below the P0 line.

Drift status per model version and cohort: stable (PSI < 0.1) / investigate (0.1..0.2) / significant
(> 0.2), from telemetry.drift. The keyword-spotting archetype (chapter, DS-CNN row) retrains when the
false-wake rate exceeds 1 % or the battery drain exceeds spec; significant drift (PSI > 0.2) is a
trigger too. A trigger is an event with its evidence; delivering it (webhook) is the server's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fleet_server.rollouts.totals import DeviceTotals
from telemetry.drift import PSI_P2_ALERT, PSI_SIGNIFICANT, drift_report

Severity = Literal["P0", "P1", "P2", "P3"]
RESPONSE_TIME: dict[str, str] = {"P0": "15 minutes", "P1": "1 hour", "P2": "4 hours", "P3": "24 hours"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AlertRules(_Model):
    p0_error_rate: float = Field(default=1e-3, ge=0)  # serving errors per inference
    p1_accuracy_drop: float = Field(default=0.10, gt=0, lt=1)  # relative drop of the accuracy proxy
    p1_min_positives: int = Field(default=100, ge=1)  # in each group before P1 is judged
    drift_alert_psi: float = Field(default=PSI_SIGNIFICANT, ge=0)  # 0.2
    p2_psi: float = Field(default=PSI_P2_ALERT, ge=0)  # 0.3
    drift_min_samples: int = Field(default=500, ge=1)
    false_wake_rate_trigger: float = Field(default=0.01, gt=0, lt=1)  # false positives per inference
    false_wake_min_inferences: int = Field(default=1000, ge=1)
    battery_drain_spec_pct_per_h: float | None = Field(default=None, gt=0)  # None: no spec, no trigger


class GroupFigures(_Model):
    """Summed figures of one group of devices (a model version, a cohort, the control group)."""

    devices: int = 0
    inferences: int = 0
    positives: int = 0
    false_positives: int = 0
    serving_errors: int = 0
    battery_drain_pct_per_h: float | None = None  # mean over devices with a figure
    input_hist: dict[int, list[int]] = Field(default_factory=dict)

    @property
    def false_wake_rate(self) -> float | None:
        return self.false_positives / self.inferences if self.inferences else None

    @property
    def accuracy_proxy(self) -> float | None:
        return 1.0 - self.false_positives / self.positives if self.positives else None

    @classmethod
    def of(cls, totals: DeviceTotals, mask: np.ndarray) -> GroupFigures:
        drain = totals.battery_drain_pct_per_h[mask]
        drain = drain[np.isfinite(drain)]
        return cls(
            devices=int(mask.sum()),
            inferences=int(totals.inferences[mask].sum()),
            positives=int(totals.positives[mask].sum()),
            false_positives=int(totals.false_positives[mask].sum()),
            serving_errors=int(totals.serving_errors[mask].sum()),
            battery_drain_pct_per_h=float(drain.mean()) if drain.size else None,
            input_hist={f: h[mask].sum(axis=0).astype(int).tolist() for f, h in totals.input_hist.items()},
        )


class Alert(_Model):
    severity: Severity
    code: str
    title: str
    response_time: str
    model: str
    version: str
    cohort: str
    at: float
    evidence: dict[str, Any] = Field(default_factory=dict)


class FeatureDriftStatus(_Model):
    feature: int
    status: str
    psi: float | None
    ks: float | None
    js: float | None
    samples: float


class DriftStatusRecord(_Model):
    model: str
    version: str
    cohort: str
    at: float
    status: Literal["stable", "investigate", "significant", "no_data"]
    features: list[FeatureDriftStatus]
    alert: bool  # some feature with PSI above the drift alert line (0.2)


class RetrainingTrigger(_Model):
    model: str
    version: str
    cohort: str
    at: float
    reasons: list[str]
    evidence: dict[str, Any]


class AlertReport(_Model):
    alerts: list[Alert]
    drift: DriftStatusRecord
    retraining_trigger: RetrainingTrigger | None


def drift_status_of(
    model: str,
    version: str,
    cohort: str,
    figures: GroupFigures,
    baseline: Mapping[int, Sequence[float]],
    rules: AlertRules,
    now: float,
) -> DriftStatusRecord:
    observed = {
        str(f): h
        for f, h in figures.input_hist.items()
        if str(f) in {str(k) for k in baseline} and sum(h) >= rules.drift_min_samples
    }
    base = {str(f): list(h) for f, h in baseline.items()}
    report = drift_report(base, observed) if observed else None
    features = (
        []
        if report is None
        else [
            FeatureDriftStatus(
                feature=int(f.name), status=f.status, psi=f.psi, ks=f.ks, js=f.js, samples=f.n_observed
            )
            for f in report.features
        ]
    )
    return DriftStatusRecord(
        model=model,
        version=version,
        cohort=cohort,
        at=now,
        status="no_data" if report is None else report.status,
        features=features,
        alert=any(f.psi is not None and f.psi > rules.drift_alert_psi for f in features),
    )


def evaluate_alerts(
    model: str,
    version: str,
    cohort: str,
    figures: GroupFigures,
    now: float,
    *,
    reference: GroupFigures | None = None,
    baseline: Mapping[int, Sequence[float]] | None = None,
    rules: AlertRules | None = None,
) -> AlertReport:
    """Alerts, drift status and retraining trigger for one group (model version x cohort)."""
    rules = rules or AlertRules()
    alerts: list[Alert] = []

    def alert(sev: Severity, code: str, title: str, **evidence: Any) -> None:
        alerts.append(
            Alert(
                severity=sev,
                code=code,
                title=title,
                response_time=RESPONSE_TIME[sev],
                model=model,
                version=version,
                cohort=cohort,
                at=now,
                evidence=evidence,
            )
        )

    # P0 / P3: serving errors
    if figures.serving_errors:
        rate = figures.serving_errors / figures.inferences if figures.inferences else None
        if rate is None or rate > rules.p0_error_rate:
            alert(
                "P0",
                "serving_errors",
                "model failure: serving errors (invoke failures, null outputs)",
                errors=figures.serving_errors,
                inferences=figures.inferences,
                rate=rate,
                threshold=rules.p0_error_rate,
            )
        else:
            alert(
                "P3",
                "serving_errors_minor",
                "occasional serving errors",
                errors=figures.serving_errors,
                inferences=figures.inferences,
                rate=rate,
                threshold=rules.p0_error_rate,
            )
    # P1: accuracy proxy vs the reference group
    if (
        reference is not None
        and figures.positives >= rules.p1_min_positives
        and reference.positives >= rules.p1_min_positives
    ):
        a, r = figures.accuracy_proxy, reference.accuracy_proxy
        if a is not None and r is not None and r > 0 and (r - a) / r > rules.p1_accuracy_drop:
            alert(
                "P1",
                "accuracy_degradation",
                f"accuracy proxy down {(r - a) / r:.1%} against the reference",
                proxy="1 - false_positives / positives",
                value=a,
                reference=r,
                drop=(r - a) / r,
                threshold=rules.p1_accuracy_drop,
            )
    # P2 / P3: drift
    drift = drift_status_of(model, version, cohort, figures, baseline or {}, rules, now)
    for f in drift.features:
        if f.psi is not None and f.psi > rules.p2_psi:
            alert(
                "P2",
                "drift_moderate",
                f"input feature {f.feature} PSI {f.psi:.3f} > {rules.p2_psi}",
                feature=f.feature,
                psi=f.psi,
                ks=f.ks,
                js=f.js,
                threshold=rules.p2_psi,
            )
        elif f.psi is not None and f.psi > rules.drift_alert_psi:
            alert(
                "P3",
                "drift_significant",
                f"input feature {f.feature} PSI {f.psi:.3f} > {rules.drift_alert_psi}",
                feature=f.feature,
                psi=f.psi,
                ks=f.ks,
                js=f.js,
                threshold=rules.drift_alert_psi,
            )
    # Retraining trigger (keyword-spotting archetype + significant drift)
    reasons: list[str] = []
    evidence: dict[str, Any] = {"inferences": figures.inferences, "false_positives": figures.false_positives}
    fwr = figures.false_wake_rate
    if (
        fwr is not None
        and figures.inferences >= rules.false_wake_min_inferences
        and fwr > rules.false_wake_rate_trigger
    ):
        reasons.append(f"false-wake rate {fwr:.2%} > {rules.false_wake_rate_trigger:.0%}")
        evidence["false_wake_rate"] = fwr
    spec = rules.battery_drain_spec_pct_per_h
    if (
        spec is not None
        and figures.battery_drain_pct_per_h is not None
        and figures.battery_drain_pct_per_h > spec
    ):
        reasons.append(f"battery drain {figures.battery_drain_pct_per_h:.2f} %/h beyond spec {spec:.2f} %/h")
        evidence["battery_drain_pct_per_h"] = figures.battery_drain_pct_per_h
    if drift.alert:
        reasons.append(f"input drift: PSI > {rules.drift_alert_psi}")
        evidence["drift"] = [f.model_dump() for f in drift.features]
    trigger = None
    if reasons:
        trigger = RetrainingTrigger(
            model=model, version=version, cohort=cohort, at=now, reasons=reasons, evidence=evidence
        )
    return AlertReport(alerts=alerts, drift=drift, retraining_trigger=trigger)
