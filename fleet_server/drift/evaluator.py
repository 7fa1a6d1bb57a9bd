"""Drift evaluation per model version x cohort: snapshot, alerts (dedup), retraining-trigger events.

The statistics and the rules are fleet_server.rollouts.alerts (``evaluate_alerts`` -> PSI / KS / JS via
telemetry.drift, the chapter's thresholds, the keyword-spotting retraining trigger); this module only
feeds them sums from the database and stores what they decide:

* a ``drift_snapshots`` row per evaluation (status, per-feature PSI / KS / JS, how much data);
* alerts through fleet_server.alert_store with ``dedup_key = drift:<model>:<version>:<cohort>:<code>``:
  a condition seen again refreshes the open alert, a condition that cleared (the group had data and
  the code is no longer raised) resolves it;
* a ``retraining_events`` row per trigger *episode* (``retrain:<model>:<version>:<cohort>``), stored
  ``pending`` for the webhook (fleet_server.drift.webhook) in the same transaction.

``evaluate_all(session, settings, now)`` is what a scheduler calls (see fleet_server.drift.scheduler);
it commits, then delivers pending webhook events.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fleet_server.alert_store import raise_alert, resolve_alert
from fleet_server.db.alerts import AlertRow
from fleet_server.db.drift import DriftSnapshot, RetrainingEvent
from fleet_server.drift.baselines import BaselineUnavailable, LoadedBaseline, load_baseline
from fleet_server.drift.sums import ALL, CohortSums, cohort_sums
from fleet_server.rollouts.alerts import AlertReport, AlertRules, GroupFigures, evaluate_alerts
from fleet_server.settings import Settings
from fleet_server.telemetry_queries import Cohort, from_unix, unix, versions_reporting

# The codes evaluate_alerts raises from drift; only these are this evaluator's to raise and resolve
# (serving errors and the accuracy proxy vs a control group are the rollout gates' alerts).
DRIFT_CODES = ("drift_moderate", "drift_significant")


def alert_key(model: str, version: int, cohort: str, code: str) -> str:
    return f"drift:{model}:{version}:{cohort}:{code}"


def trigger_key(model: str, version: int, cohort: str) -> str:
    return f"retrain:{model}:{version}:{cohort}"


@dataclass
class GroupOutcome:
    model_name: str
    model_version: int
    cohort: str
    status: str
    snapshot_id: int | None = None
    alerts_raised: list[int] = field(default_factory=list)  # new alert ids
    alerts_refreshed: list[int] = field(default_factory=list)
    alerts_resolved: int = 0
    event_id: int | None = None
    event_created: bool = False


@dataclass
class EvaluationSummary:
    at: dt.datetime
    range_start: dt.datetime
    range_end: dt.datetime
    groups: list[GroupOutcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # versions without a baseline, with the reason
    deliveries: dict[str, int] = field(default_factory=dict)  # delivered / failed / skipped

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "range_start": self.range_start,
            "range_end": self.range_end,
            "groups": [vars(g) for g in self.groups],
            "skipped": self.skipped,
            "deliveries": self.deliveries,
        }


def rules_of(settings: Settings) -> AlertRules:
    return AlertRules(
        drift_min_samples=settings.drift_min_samples,
        battery_drain_spec_pct_per_h=settings.drift_battery_drain_spec_pct_per_h,
    )


def figures_of(sums: CohortSums) -> GroupFigures:
    return GroupFigures(
        devices=sums.devices,
        inferences=sums.inferences,
        positives=sums.positives,
        false_positives=sums.false_positives,
        battery_drain_pct_per_h=sums.battery_drain_pct_per_h,
        input_hist=dict(sums.input_hist),
    )


def evaluate_group(
    session: Session,
    *,
    model_name: str,
    model_version: int,
    cohort: str,
    sums: CohortSums,
    baseline: LoadedBaseline,
    rules: AlertRules,
    range_start: dt.datetime,
    range_end: dt.datetime,
    now: dt.datetime,
) -> GroupOutcome:
    """Judge one group's sums against the baseline and store snapshot, alerts and trigger event."""
    report: AlertReport = evaluate_alerts(
        model_name,
        str(model_version),
        cohort,
        figures_of(sums),
        now.timestamp(),
        baseline=baseline.features,
        rules=rules,
    )
    drift = report.drift
    psis = [f.psi for f in drift.features if f.psi is not None]
    snapshot = DriftSnapshot(
        model_name=model_name,
        model_version=model_version,
        release_id=baseline.release_id,
        cohort=cohort,
        range_start=range_start,
        range_end=range_end,
        evaluated_at=now,
        status=drift.status,
        max_psi=max(psis) if psis else None,
        alert=drift.alert,
        devices=sums.devices,
        windows=sums.windows,
        samples=int(sum(sum(h) for h in sums.input_hist.values())),
        features=[f.model_dump() for f in drift.features],
        note=(f"{sums.mismatched_windows} windows with histogram bins not matching the baseline ignored")
        if sums.mismatched_windows
        else "",
    )
    session.add(snapshot)
    outcome = GroupOutcome(model_name, model_version, cohort, drift.status)
    context = {
        "release_id": baseline.release_id,
        "model_version_name": baseline.model_version_name,
        "range_start": range_start.isoformat(),
        "range_end": range_end.isoformat(),
        "devices": sums.devices,
        "windows": sums.windows,
    }

    # Alerts: one per (group, code), evidence listing every feature that raised it.
    by_code: dict[str, list[Any]] = {}
    for a in report.alerts:
        if a.code in DRIFT_CODES:
            by_code.setdefault(a.code, []).append(a)
    for code, alerts in by_code.items():
        worst = max(alerts, key=lambda a: a.evidence.get("psi") or 0.0)
        title = (
            worst.title
            if len(alerts) == 1
            else f"{len(alerts)} input features drifted; worst: feature {worst.evidence['feature']} "
            f"PSI {worst.evidence['psi']:.3f} > {worst.evidence['threshold']}"
        )
        row, created = raise_alert(
            session,
            severity=min(a.severity for a in alerts),
            code=code,
            title=f"{model_name} v{model_version} [{cohort}]: {title}",
            dedup_key=alert_key(model_name, model_version, cohort, code),
            evidence={
                **context,
                "response_time": worst.response_time,
                "features": [a.evidence for a in alerts],
            },
            model_name=model_name,
            model_version=str(model_version),
            cohort=cohort[:64],
            now=now,
        )
        session.flush()
        (outcome.alerts_raised if created else outcome.alerts_refreshed).append(row.id)
    if drift.status != "no_data":  # with no data nothing can be said to have cleared
        for code in DRIFT_CODES:
            if code not in by_code:
                outcome.alerts_resolved += resolve_alert(
                    session, alert_key(model_name, model_version, cohort, code), now=now
                )

    # Retraining trigger: one event per episode.
    key = trigger_key(model_name, model_version, cohort)
    open_event = session.scalar(
        select(RetrainingEvent)
        .where(RetrainingEvent.dedup_key == key, RetrainingEvent.cleared_at.is_(None))
        .order_by(RetrainingEvent.id.desc())
        .limit(1)
    )
    trigger = report.retraining_trigger
    if trigger is not None:
        if open_event is None:
            open_event = RetrainingEvent(
                event_uid=str(uuid.uuid4()),
                dedup_key=key,
                model_name=model_name,
                model_version=model_version,
                cohort=cohort[:64],
                reasons=list(trigger.reasons),
                evidence={**context, **trigger.evidence, "drift_status": drift.status},
                created_at=now,
                last_seen_at=now,
                next_attempt_at=now,
            )
            session.add(open_event)
            outcome.event_created = True
        else:
            open_event.count += 1
            open_event.last_seen_at = now
        session.flush()
        outcome.event_id = open_event.id
    elif open_event is not None and (
        drift.status != "no_data" or sums.inferences >= rules.false_wake_min_inferences
    ):
        open_event.cleared_at = now  # the episode ended; the next trigger is a new event
    session.flush()
    outcome.snapshot_id = snapshot.id
    return outcome


def _no_baseline_snapshot(
    session: Session,
    model_name: str,
    model_version: int,
    why: str,
    range_start: dt.datetime,
    range_end: dt.datetime,
    now: dt.datetime,
) -> GroupOutcome:
    snap = DriftSnapshot(
        model_name=model_name,
        model_version=model_version,
        cohort=ALL,
        range_start=range_start,
        range_end=range_end,
        evaluated_at=now,
        status="no_baseline",
        features=[],
        note=why[:2000],
    )
    session.add(snap)
    session.flush()
    return GroupOutcome(model_name, model_version, ALL, "no_baseline", snapshot_id=snap.id)


def evaluate_version(
    session: Session,
    settings: Settings,
    *,
    model_name: str,
    model_version: int,
    range_start: dt.datetime,
    range_end: dt.datetime,
    now: dt.datetime,
    cohort: Cohort | None = None,
    by_hardware_class: bool = True,
) -> list[GroupOutcome]:
    """Evaluate one released version: cohort ``all`` + per hardware class, or just ``cohort``."""
    assert settings.artifact_dir is not None
    try:
        baseline = load_baseline(session, settings.artifact_dir, model_name, model_version)
    except BaselineUnavailable as exc:
        return [
            _no_baseline_snapshot(session, model_name, model_version, str(exc), range_start, range_end, now)
        ]
    rules = rules_of(settings)
    sums = cohort_sums(
        session,
        model_name=model_name,
        model_version=model_version,
        since_s=unix(range_start),
        until_s=unix(range_end),
        bins=baseline.bins,
        cohort=cohort,
        by_hardware_class=by_hardware_class,
        battery=rules.battery_drain_spec_pct_per_h is not None,
    )
    if cohort is not None and not cohort.everything:
        sums.setdefault(cohort.name(), CohortSums())
    elif not sums:
        sums[ALL] = CohortSums()
    return [
        evaluate_group(
            session,
            model_name=model_name,
            model_version=model_version,
            cohort=name,
            sums=group,
            baseline=baseline,
            rules=rules,
            range_start=range_start,
            range_end=range_end,
            now=now,
        )
        for name, group in sorted(sums.items())
    ]


def prune_snapshots(session: Session, settings: Settings, now: dt.datetime) -> int:
    cutoff = now - dt.timedelta(days=settings.drift_snapshot_retention_days)
    result = session.execute(delete(DriftSnapshot).where(DriftSnapshot.evaluated_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def evaluate_all(
    session: Session,
    settings: Settings,
    now: dt.datetime,
    *,
    model_name: str | None = None,
    model_version: int | None = None,
    window_s: int | None = None,
    deliver: bool = True,
) -> EvaluationSummary:
    """Evaluate every (model, version) that reported in the last ``drift_window_s`` (or ``window_s``);
    commit; then deliver pending retraining events to the webhook (when one is configured)."""
    end_s = unix(now)
    start_s = end_s - (window_s or settings.drift_window_s)
    range_start, range_end = from_unix(start_s), from_unix(end_s)
    summary = EvaluationSummary(at=now, range_start=range_start, range_end=range_end)
    for name, version in versions_reporting(session, start_s, end_s, model_name, model_version):
        outcomes = evaluate_version(
            session,
            settings,
            model_name=name,
            model_version=version,
            range_start=range_start,
            range_end=range_end,
            now=now,
        )
        summary.groups.extend(outcomes)
        summary.skipped.extend(
            f"{name} v{version}: no baseline" for o in outcomes if o.status == "no_baseline"
        )
    prune_snapshots(session, settings, now)
    session.commit()
    if deliver:
        from fleet_server.drift.webhook import deliver_pending

        summary.deliveries = deliver_pending(session, settings, now)
    return summary


def open_drift_alerts(session: Session, model_name: str | None = None) -> list[AlertRow]:
    stmt = select(AlertRow).where(AlertRow.state != "resolved", AlertRow.dedup_key.like("drift:%"))
    if model_name is not None:
        stmt = stmt.where(AlertRow.model_name == model_name)
    return list(session.scalars(stmt.order_by(AlertRow.id)))
