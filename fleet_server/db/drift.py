"""Drift snapshots (one row per evaluation of a model version x cohort) and retraining-trigger events.

``retraining_events`` is also the webhook outbox: an event is stored ``pending`` in the same transaction
as the evaluation that raised it and flips to ``delivered`` only after the receiver answered 2xx, so a
crash or an unreachable receiver never loses one (a restarted server picks up what is still pending).
One event per *episode*: while the trigger condition persists the open event is refreshed (``count``,
``last_seen_at``); when it clears, ``cleared_at`` is set and the next trigger is a new event.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.base import Base, BigId, JsonDict, UTCDateTime, utcnow

DRIFT_STATUSES = ("stable", "investigate", "significant", "no_data", "no_baseline")
DELIVERY_STATES = ("pending", "delivered")


class DriftSnapshot(Base):
    __tablename__ = "drift_snapshots"
    __table_args__ = (
        CheckConstraint(
            "status IN ('stable', 'investigate', 'significant', 'no_data', 'no_baseline')",
            name="status_known",
        ),
        Index("ix_drift_snapshots_key", "model_name", "model_version", "cohort", "evaluated_at"),
        Index("ix_drift_snapshots_evaluated_at", "evaluated_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int] = mapped_column(BigId)  # the release counter devices report
    release_id: Mapped[str | None] = mapped_column(String(64), default=None)
    cohort: Mapped[str] = mapped_column(String(64))  # "all", "hw:<class>", "tag:<k>=<v>", "devices:<hash>"
    range_start: Mapped[dt.datetime] = mapped_column(UTCDateTime)  # windows starting in [start, end)
    range_end: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    evaluated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(16))
    max_psi: Mapped[float | None] = mapped_column(Float, default=None)
    alert: Mapped[bool] = mapped_column(Boolean, default=False)  # some feature PSI above 0.2
    devices: Mapped[int] = mapped_column(Integer, default=0)
    windows: Mapped[int] = mapped_column(BigId, default=0)
    samples: Mapped[int] = mapped_column(BigId, default=0)  # histogram counts summed over features
    # [{feature, status, psi, ks, js, samples}] as fleet_server.rollouts.alerts.FeatureDriftStatus
    features: Mapped[list[dict[str, Any]]] = mapped_column(JsonDict, default=list)
    note: Mapped[str] = mapped_column(Text, default="")


class RetrainingEvent(Base):
    __tablename__ = "retraining_events"
    __table_args__ = (
        CheckConstraint("delivery_state IN ('pending', 'delivered')", name="delivery_state_known"),
        Index("ix_retraining_events_delivery", "delivery_state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Sent to the receiver (body and X-TinyFleet-Event-Id) so it can drop a redelivered duplicate.
    event_uid: Mapped[str] = mapped_column(String(36), unique=True)
    dedup_key: Mapped[str] = mapped_column(String(256), index=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    model_version: Mapped[int] = mapped_column(BigId)
    cohort: Mapped[str] = mapped_column(String(64))
    reasons: Mapped[list[str]] = mapped_column(JsonDict, default=list)
    evidence: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    count: Mapped[int] = mapped_column(Integer, default=1)
    cleared_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # Webhook delivery (outbox)
    delivery_state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    last_error: Mapped[str | None] = mapped_column(String(1000), default=None)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    delivered_to: Mapped[str | None] = mapped_column(String(512), default=None)
