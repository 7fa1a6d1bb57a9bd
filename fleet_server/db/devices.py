"""The ``devices`` table: one row per provisioned device."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from fleet_server.db.base import Base, JsonDict, UTCDateTime, utcnow
from telemetry.topics import DEVICE_ID_MAX_LEN


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (
        CheckConstraint("fallback_level IS NULL OR fallback_level >= 0", name="fallback_level_nonneg"),
        CheckConstraint("active_slot IS NULL OR active_slot IN ('a', 'b')", name="active_slot_ab"),
    )

    # Device id = MQTT username (telemetry.topics rules), validated before it gets here.
    id: Mapped[str] = mapped_column(String(DEVICE_ID_MAX_LEN), primary_key=True)
    # Hardware class name from firmware_stubs.hardware_profiles; a string, not an enum, so a new class
    # needs no migration.
    hardware_class: Mapped[str] = mapped_column(String(32), index=True)
    tags: Mapped[dict[str, Any]] = mapped_column(JsonDict, default=dict)
    # Mosquitto-compatible PBKDF2-SHA512 hash ($7$iterations$salt$hash) of the device secret.
    mqtt_password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # What the device last reported running (written by the ingest worker).
    current_model: Mapped[str | None] = mapped_column(String(64), default=None)
    current_version: Mapped[str | None] = mapped_column(String(32), default=None)
    active_slot: Mapped[str | None] = mapped_column(String(1), default=None)
    fallback_level: Mapped[int | None] = mapped_column(Integer, default=None)
    # The newest metrics window's battery state (highest seq; written by the ingest worker, migration 0008):
    # the rollout runner reads it with the device row instead of searching the windows on every tick.
    battery_pct: Mapped[float | None] = mapped_column(Float, default=None)
    battery_charging: Mapped[bool | None] = mapped_column(Boolean, default=None)
    battery_seq: Mapped[int | None] = mapped_column(BigInteger, default=None)
    battery_window_start_s: Mapped[int | None] = mapped_column(BigInteger, default=None)
