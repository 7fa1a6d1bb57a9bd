"""Store alerts: one open row per condition (``dedup_key``); a condition seen again refreshes it.

Used by the rollout runner (gate alerts) and the drift evaluator. Plain functions over a Session;
the caller commits (so an alert lands in the same transaction as the decision that raised it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleet_server.db.alerts import SEVERITIES, AlertRow
from fleet_server.db.base import utcnow


def raise_alert(
    session: Session,
    *,
    severity: str,
    code: str,
    title: str,
    dedup_key: str,
    evidence: dict[str, Any] | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    cohort: str | None = None,
    rollout_id: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[AlertRow, bool]:
    """Open an alert, or refresh the open one with the same ``dedup_key``. Returns (row, created)."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; one of {', '.join(SEVERITIES)}")
    now = now or utcnow()
    row = session.scalars(
        select(AlertRow).where(AlertRow.dedup_key == dedup_key, AlertRow.state != "resolved").limit(1)
    ).first()
    if row is not None:
        row.count += 1
        row.last_seen_at = now
        if evidence is not None:
            row.evidence = evidence
        # A condition that got worse is shown at its worse severity (P0 < P3 sorts as "more severe").
        row.severity = min(row.severity, severity)
        return row, False
    row = AlertRow(
        severity=severity,
        code=code,
        title=title[:256],
        dedup_key=dedup_key[:256],
        evidence=evidence or {},
        model_name=model_name,
        model_version=model_version,
        cohort=cohort,
        rollout_id=rollout_id,
        created_at=now,
        last_seen_at=now,
    )
    session.add(row)
    return row, True


def resolve_alert(session: Session, dedup_key: str, *, now: dt.datetime | None = None) -> int:
    """Resolve the open alert(s) for a condition that cleared; returns how many were resolved."""
    rows = session.scalars(
        select(AlertRow).where(AlertRow.dedup_key == dedup_key, AlertRow.state != "resolved")
    ).all()
    for row in rows:
        row.state = "resolved"
        row.resolved_at = now or utcnow()
    return len(rows)
