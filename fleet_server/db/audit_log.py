"""The ``audit_log`` table: who did what, to what, when, from where, and how it ended."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.base import Base, BigId, JsonDict, UTCDateTime, utcnow

OUTCOMES = ("ok", "denied", "rejected", "error")


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint("outcome IN ('ok', 'denied', 'rejected', 'error')", name="outcome_known"),
        CheckConstraint(
            "actor_kind IN ('operator', 'device', 'anonymous', 'system')", name="actor_kind_known"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100), index=True)  # token name, device id or "anonymous"
    actor_kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(100), index=True)  # e.g. "device.provision"
    target: Mapped[str | None] = mapped_column(String(200), default=None, index=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), default=None)
    outcome: Mapped[str] = mapped_column(String(16), index=True)
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
