"""Build the controller's FleetView straight from columns (no per-device pydantic objects).

Building 100,000 ``DeviceInfo`` models costs seconds; here the devices table is read as plain tuples,
hardware-class eligibility is one ``np.isin`` and tags are looked at only when the target filter names
some. Battery and charging come from the device row (the newest metrics window's, kept there by the
ingest worker; ignored when that window started before the lookback): a device that has not reported
recently counts as unknown battery (mains powered / fine to command).

Tags: devices carry ``{key: value}``; a target tag ``"key=value"`` matches that pair, a bare ``"key"``
matches the key with any value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, case, select

from fleet_server.db.devices import Device
from fleet_server.rollout_runner.columns import fetch_columns
from fleet_server.rollouts.cohorts import FleetView, hash_points
from fleet_server.rollouts.model import TargetFilter


@dataclass
class LoadedFleet:
    fleet: FleetView
    # The counter each device last reported running for the rollout's model (-1: unknown / other model).
    running_counter: np.ndarray


def device_tag_set(tags: Mapping[str, Any] | None) -> set[str]:
    out: set[str] = set()
    for key, value in (tags or {}).items():
        out.add(str(key))
        out.add(f"{key}={value}")
    return out


def _counter(model: str | None, version: str | None, want_model: str) -> int:
    if model != want_model or version is None or not version.isdigit():
        return -1
    return int(version)


class PointsCache:
    """Cohort hash points per rollout (BLAKE2b of 2 x 100,000 ids costs ~0.3 s): recomputed only when the
    registered device list changed."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}

    def get(self, rollout_id: str, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        hit = self._entries.get(rollout_id)
        if hit is not None and hit[0] == ids:
            return hit[1], hit[2]
        points = hash_points(rollout_id, ids)
        control = hash_points(rollout_id, ids, salt="control:")
        self._entries[rollout_id] = (ids, points, control)
        return points, control

    def forget(self, rollout_id: str) -> None:
        self._entries.pop(rollout_id, None)


def load_fleet(
    conn: Connection,
    rollout_id: str,
    target: TargetFilter,
    model_name: str,
    *,
    battery_since: int,
    points: PointsCache | None = None,
) -> LoadedFleet:
    """Every registered device as one FleetView row (eligibility per ``target``)."""
    cols = [
        Device.id,
        Device.hardware_class,
        Device.current_model,
        Device.current_version,
        # NULL unless the newest window (written by ingest, see ingest/store.py) started within the lookback.
        case((Device.battery_window_start_s >= battery_since, Device.battery_pct), else_=None),
        case((Device.battery_window_start_s >= battery_since, Device.battery_charging), else_=False),
    ]
    if target.tags:
        cols.append(Device.tags)
    # Ordered by id in SQL (array_agg keeps the subquery's order on PostgreSQL; rows on SQLite).
    columns = fetch_columns(conn, select(*cols).order_by(Device.id), conn.dialect.name == "postgresql")
    if columns is None:
        columns = [[] for _ in cols]
    ids = list(columns[0])
    n = len(ids)
    hw = np.array(columns[1], dtype=object)
    eligible = np.ones(n, dtype=bool)
    if target.hardware_classes:
        eligible &= np.isin(hw, np.array(target.hardware_classes, dtype=object))
    if target.tags:
        want = set(target.tags)
        eligible &= np.fromiter((want <= device_tag_set(t) for t in columns[6]), dtype=bool, count=n)
    running = np.fromiter(
        (_counter(m, v, model_name) for m, v in zip(columns[2], columns[3], strict=True)),
        dtype=np.int64,
        count=n,
    )
    # None -> NaN (no battery reported recently: unknown, mains powered or fine to command).
    battery = np.array(columns[4], dtype=np.float64) if n else np.zeros(0)
    charging = np.array([bool(c) for c in columns[5]], dtype=bool)
    index = {d: i for i, d in enumerate(ids)}
    pts, control_pts = (points or PointsCache()).get(rollout_id, ids)
    fleet = FleetView(
        device_ids=np.array(ids, dtype=object),
        hardware_class=hw,
        eligible=eligible,
        battery_pct=battery,
        charging=charging,
        points=pts,
        control_points=control_pts,
    )
    fleet._index = index
    return LoadedFleet(fleet=fleet, running_counter=running)
