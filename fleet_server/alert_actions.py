"""What operators do with alerts: list (filtered, open first), acknowledge, resolve.

Raising and auto-resolving is fleet_server.alert_store (rollout runner, drift evaluator); this module is
the operator side, used by the REST API, the CLI (through the API) and the dashboard. The caller commits.

State machine: open -> acknowledged -> resolved, and open -> resolved. Acknowledging records who and an
optional note; it does not stop the condition from refreshing the alert (``count``, ``last_seen_at``).
A resolved alert is final: a condition that returns opens a new alert (alert_store dedup).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from fleet_server.db.alerts import AlertRow
from fleet_server.db.base import utcnow
from fleet_server.service_errors import ServiceError

NOTE_MAX = 1000


class AlertActionError(ServiceError):
    """``status_code`` is the HTTP status the API maps it to (404 unknown, 409 wrong state)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status
        self.code = code


def list_alerts(
    session: Session,
    *,
    severity: str | None = None,
    state: str | None = None,
    model_name: str | None = None,
    code: str | None = None,
    limit: int,
    offset: int,
) -> tuple[list[AlertRow], int]:
    """Alerts matching the filters: unresolved first, then by severity (P0 first), newest first."""
    conditions = []
    if severity is not None:
        conditions.append(AlertRow.severity == severity)
    if state is not None:
        conditions.append(AlertRow.state == state)
    if model_name is not None:
        conditions.append(AlertRow.model_name == model_name)
    if code is not None:
        conditions.append(AlertRow.code == code)
    total = int(session.scalar(select(func.count()).select_from(AlertRow).where(*conditions)) or 0)
    resolved_last = case((AlertRow.state == "resolved", 1), else_=0)
    rows = session.scalars(
        select(AlertRow)
        .where(*conditions)
        .order_by(resolved_last, AlertRow.severity, AlertRow.last_seen_at.desc(), AlertRow.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), total


def _get(session: Session, alert_id: int) -> AlertRow:
    row = session.get(AlertRow, alert_id)
    if row is None:
        raise AlertActionError(404, "not_found", f"no alert {alert_id}")
    return row


def _append_note(row: AlertRow, by: str, note: str | None, now: dt.datetime) -> None:
    if note:
        line = f"[{now.isoformat(timespec='seconds')} {by}] {note}"
        row.note = f"{row.note}\n{line}" if row.note else line


def acknowledge(
    session: Session, alert_id: int, *, by: str, note: str | None = None, now: dt.datetime | None = None
) -> AlertRow:
    now = now or utcnow()
    row = _get(session, alert_id)
    if row.state == "resolved":
        raise AlertActionError(409, "conflict", f"alert {alert_id} is resolved; it cannot be acknowledged")
    if row.state == "acknowledged":
        raise AlertActionError(
            409, "conflict", f"alert {alert_id} was already acknowledged by {row.acknowledged_by}"
        )
    row.state = "acknowledged"
    row.acknowledged_by = by[:128]
    _append_note(row, by, note, now)
    return row


def resolve(
    session: Session, alert_id: int, *, by: str, note: str | None = None, now: dt.datetime | None = None
) -> AlertRow:
    now = now or utcnow()
    row = _get(session, alert_id)
    if row.state == "resolved":
        raise AlertActionError(409, "conflict", f"alert {alert_id} is already resolved")
    row.state = "resolved"
    row.resolved_at = now
    _append_note(row, by, note or "resolved", now)
    return row
