"""Alerts with the ML Operations chapter's severities (P0 model failure … P3 minor anomaly).

Written by the rollout runner (gate-driven alerts) and by the drift evaluator; read by the API, the CLI
and the dashboard. ``dedup_key`` keeps one *open* alert per condition: a condition that persists over
many evaluations updates ``last_seen_at`` and ``count`` instead of adding rows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.base import Base, BigId, JsonDict, UTCDateTime, utcnow

SEVERITIES = ("P0", "P1", "P2", "P3")
ALERT_STATES = ("open", "acknowledged", "resolved")


class AlertRow(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("severity IN ('P0', 'P1', 'P2', 'P3')", name="severity_known"),
        CheckConstraint("state IN ('open', 'acknowledged', 'resolved')", name="state_known"),
        Index("ix_alerts_state_severity", "state", "severity"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    severity: Mapped[str] = mapped_column(String(2))
    code: Mapped[str] = mapped_column(String(64))  # e.g. "serving_errors", "psi_drift", "fp_rate"
    title: Mapped[str] = mapped_column(String(256))
    model_name: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    model_version: Mapped[str | None] = mapped_column(String(32), default=None)
    cohort: Mapped[str | None] = mapped_column(String(64), default=None)
    rollout_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    evidence: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="open")
    dedup_key: Mapped[str] = mapped_column(String(256), index=True)
    count: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128), default=None)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    note: Mapped[str] = mapped_column(Text, default="")
