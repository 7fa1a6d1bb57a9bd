"""Telemetry tables written by the ingest worker: metrics windows, device events, OTA status, dead letters.

Every device message table is idempotent under MQTT QoS 1 redelivery:

* ``telemetry_windows``: one row per (device_id, seq), UNIQUE, so a replayed or redelivered window is
  absorbed by ``INSERT ... ON CONFLICT DO NOTHING``. Columns mirror ``telemetry.schemas.MetricsWindow``
  flat, so the rollout gates' per-device totals are one ``GROUP BY device_id`` over
  ``window_start_s >= :stage_start`` (see fleet_server/rollouts/totals.py).
* ``device_events`` / ``ota_status``: messages without a sequence number; a digest of the payload's
  canonical form (UNIQUE per device) absorbs exact redeliveries.
* ``dead_letters``: what could not be stored, with the reason; the payload is kept up to a bound.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.base import Base, BigId, JsonDict, UTCDateTime, utcnow
from telemetry.topics import DEVICE_ID_MAX_LEN

# Dead letters keep at most this much of a payload (MAX_PAYLOAD_BYTES is 4096: an oversized one is cut).
DEAD_LETTER_PAYLOAD_MAX = 4096
DEAD_LETTER_TOPIC_MAX = 256
DEAD_LETTER_DETAIL_MAX = 500
DIGEST_LEN = 32  # hex chars of SHA-256 kept (128 bits: collisions are not a concern per device)


class TelemetryWindow(Base):
    __tablename__ = "telemetry_windows"
    __table_args__ = (
        UniqueConstraint("device_id", "seq", name="uq_telemetry_windows_device_id_seq"),
        Index("ix_telemetry_windows_window_start_s", "window_start_s"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # No FK to devices: the worker checks provisioning itself, and a FK check per row costs ingest rate.
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_MAX_LEN))
    seq: Mapped[int] = mapped_column(BigId)  # u32 on the wire: does not fit a signed 32-bit column
    window_start_s: Mapped[int] = mapped_column(BigId)
    window_len_s: Mapped[int] = mapped_column(Integer)
    duty_cycle: Mapped[float] = mapped_column(Float)
    battery_pct: Mapped[float | None] = mapped_column(Float)
    battery_mv: Mapped[int | None] = mapped_column(Integer)
    charging: Mapped[bool] = mapped_column(Boolean)
    est_battery_life_min: Mapped[int | None] = mapped_column(BigId)
    inferences: Mapped[int] = mapped_column(BigId)
    positives: Mapped[int] = mapped_column(BigId)
    false_positives: Mapped[int] = mapped_column(BigId)
    latency_p50_us: Mapped[int] = mapped_column(BigId)
    latency_p95_us: Mapped[int] = mapped_column(BigId)
    latency_max_us: Mapped[int] = mapped_column(BigId)
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[int] = mapped_column(BigId)
    model_variant: Mapped[str] = mapped_column(String(16))
    fallback_level: Mapped[int] = mapped_column(Integer)
    input_feature: Mapped[int] = mapped_column(Integer)
    input_hist: Mapped[list[int]] = mapped_column(JsonDict)
    output_hist: Mapped[list[int]] = mapped_column(JsonDict)
    nonfinite_inputs: Mapped[int] = mapped_column(BigId)
    # Shadow (candidate) figures, NULL when the window ran no shadow model.
    shadow_candidate_version: Mapped[int | None] = mapped_column(BigId)
    shadow_samples: Mapped[int | None] = mapped_column(BigId)
    shadow_agreements: Mapped[int | None] = mapped_column(BigId)
    shadow_candidate_positives: Mapped[int | None] = mapped_column(BigId)
    shadow_candidate_false_positives: Mapped[int | None] = mapped_column(BigId)
    shadow_candidate_latency_p50_us: Mapped[int | None] = mapped_column(BigId)
    shadow_candidate_latency_p95_us: Mapped[int | None] = mapped_column(BigId)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceEvent(Base):
    """FallbackSwitched, OtaStateChanged and ErrorEvent messages (``.../events``), body as JSON."""

    __tablename__ = "device_events"
    __table_args__ = (
        UniqueConstraint("device_id", "digest", name="uq_device_events_device_id_digest"),
        Index("ix_device_events_device_id_ts", "device_id", "ts"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_MAX_LEN))
    type: Mapped[str] = mapped_column(String(32))
    ts: Mapped[int] = mapped_column(BigId)
    body: Mapped[dict[str, Any]] = mapped_column(JsonDict)
    digest: Mapped[str] = mapped_column(String(DIGEST_LEN))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class OtaStatusReport(Base):
    """OtaStatus messages (``.../ota``): update progress per device and release."""

    __tablename__ = "ota_status"
    __table_args__ = (
        UniqueConstraint("device_id", "digest", name="uq_ota_status_device_id_digest"),
        Index("ix_ota_status_release_id_device_id", "release_id", "device_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(DEVICE_ID_MAX_LEN))
    ts: Mapped[int] = mapped_column(BigId)
    release_id: Mapped[str] = mapped_column(String(64))
    target_version: Mapped[int] = mapped_column(BigId)
    from_version: Mapped[int | None] = mapped_column(BigId)
    state: Mapped[str] = mapped_column(String(16))
    via_delta: Mapped[bool] = mapped_column(Boolean)
    bytes_done: Mapped[int] = mapped_column(BigId)
    bytes_total: Mapped[int] = mapped_column(BigId)
    attempt: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(1000))
    cmd_id: Mapped[str | None] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(DIGEST_LEN))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(String(32), index=True)
    detail: Mapped[str] = mapped_column(String(DEAD_LETTER_DETAIL_MAX))
    topic: Mapped[str] = mapped_column(String(DEAD_LETTER_TOPIC_MAX))
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # first DEAD_LETTER_PAYLOAD_MAX bytes
    payload_size: Mapped[int] = mapped_column(Integer)  # the full size as received
