"""Writing and reading the audit log. Plain functions over a Session; no HTTP in here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from fleet_server.db import AuditEntry

Outcome = Literal["ok", "denied", "rejected", "error"]
ActorKind = Literal["operator", "device", "anonymous", "system"]

# Never let a caller-controlled value blow up a column.
_MAX = {"actor": 100, "action": 100, "target": 200, "client_ip": 64}


def outcome_for_status(status_code: int) -> Outcome:
    if status_code < 400:
        return "ok"
    if status_code in (401, 403):
        return "denied"
    if status_code < 500:
        return "rejected"
    return "error"


def _text(value: str) -> str:
    # PostgreSQL text (and jsonb) refuse NUL: an attacker's "%00" must still leave its audit row.
    return value.replace("\x00", "\\x00") if "\x00" in value else value


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def record(
    session: Session,
    *,
    actor: str,
    actor_kind: ActorKind,
    action: str,
    outcome: Outcome,
    target: str | None = None,
    client_ip: str | None = None,
    status_code: int | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add one audit row to ``session`` (the caller commits)."""
    entry = AuditEntry(
        actor=_text(actor)[: _MAX["actor"]],
        actor_kind=actor_kind,
        action=_text(action)[: _MAX["action"]],
        target=None if target is None else _text(target)[: _MAX["target"]],
        client_ip=None if client_ip is None else _text(client_ip)[: _MAX["client_ip"]],
        outcome=outcome,
        status_code=status_code,
        details=_clean(details or {}),
    )
    session.add(entry)
    return entry


@dataclass(frozen=True)
class AuditQuery:
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: Outcome | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def apply(self, stmt: Select[Any]) -> Select[Any]:
        if self.actor is not None:
            stmt = stmt.where(AuditEntry.actor == self.actor)
        if self.action is not None:
            stmt = stmt.where(AuditEntry.action == self.action)
        if self.target is not None:
            stmt = stmt.where(AuditEntry.target == self.target)
        if self.outcome is not None:
            stmt = stmt.where(AuditEntry.outcome == self.outcome)
        if self.since is not None:
            stmt = stmt.where(AuditEntry.at >= self.since)
        if self.until is not None:
            stmt = stmt.where(AuditEntry.at < self.until)
        return stmt


def list_entries(
    session: Session, query: AuditQuery, *, limit: int, offset: int
) -> tuple[list[AuditEntry], int]:
    """Newest first; returns (page, total matching)."""
    total = session.scalar(query.apply(select(func.count()).select_from(AuditEntry))) or 0
    rows = session.scalars(
        query.apply(select(AuditEntry)).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), total
