"""Drift status per model version and cohort, drift alerts, retraining triggers and their webhook, T*.

Public surface:

* :func:`evaluate_all` ``(session, settings, now)``: evaluate every version that reported recently,
  store snapshots, raise / refresh / resolve alerts, record retraining events, deliver the webhook;
* :func:`evaluate_version`: one version, optionally for an explicit ``telemetry_queries.Cohort`` (a
  rollout group): what a rollout runner calls for its cohort;
* :func:`deliver_pending`: the webhook outbox alone;
* :class:`DriftScheduler`: the periodic thread;
* :func:`retraining_report`: T* with lambda fitted from telemetry.
"""

from fleet_server.drift.evaluator import (
    EvaluationSummary,
    GroupOutcome,
    alert_key,
    evaluate_all,
    evaluate_version,
    trigger_key,
)
from fleet_server.drift.retraining import RetrainingReport, retraining_report
from fleet_server.drift.scheduler import DriftScheduler
from fleet_server.drift.webhook import deliver_pending

__all__ = [
    "DriftScheduler",
    "EvaluationSummary",
    "GroupOutcome",
    "RetrainingReport",
    "alert_key",
    "deliver_pending",
    "evaluate_all",
    "evaluate_version",
    "retraining_report",
    "trigger_key",
]
