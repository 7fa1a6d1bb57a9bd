"""Fleet overview figures: devices by hardware class, by running version, by health; one devices page.

Each figure is one GROUP BY over ``devices`` (cheap at 100k rows). Battery and duty cycle come from each
device's newest telemetry window (highest seq) among the windows starting at or after ``since_s``: the
lookback bounds the scan of a table that grows without end (the window_start_s index), and a battery
figure older than that is not shown as current anyway.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Select, Subquery, and_, case, func, select
from sqlalchemy.orm import Session

from fleet_server.db import Device, TelemetryWindow

Health = Literal["ok", "stale", "offline", "never_seen"]
HEALTH_ORDER: tuple[Health, ...] = ("ok", "stale", "offline", "never_seen")
# Battery histogram buckets (percent, lower bound inclusive) and the share below which a device is "low".
BATTERY_BUCKETS = ((0, 20, "0–20 %"), (20, 50, "20–50 %"), (50, 80, "50–80 %"), (80, 101, "80–100 %"))
LOW_BATTERY_PCT = 20.0  # a bucket bound: the low-battery count is the buckets below it
NO_FIGURE = "mains / no figure"


@dataclass(frozen=True)
class HealthThresholds:
    stale_after_s: int
    offline_after_s: int


def health_of(last_seen_at: dt.datetime | None, now: dt.datetime, limits: HealthThresholds) -> Health:
    if last_seen_at is None:
        return "never_seen"
    age = (now - last_seen_at).total_seconds()
    if age <= limits.stale_after_s:
        return "ok"
    if age <= limits.offline_after_s:
        return "stale"
    return "offline"


@dataclass(frozen=True)
class FleetCounts:
    total: int
    by_class: list[tuple[str, int]]  # most devices first
    by_version: list[tuple[str, int]]  # "model v<counter>", or "none reported"
    by_health: dict[Health, int]
    on_fallback: int  # devices whose last report shows fallback level > 0
    battery: list[tuple[str, int]]  # histogram of the latest battery figure, plus NO_FIGURE
    low_battery: int


def _count_by(session: Session, column: object) -> list[tuple[str, int]]:
    n = func.count().label("n")
    rows = session.execute(select(column, n).group_by(column).order_by(n.desc(), column)).all()
    return [(row[0], int(row[1])) for row in rows]


def _latest_windows(since_s: int) -> Select[tuple[str, int]]:
    return (
        select(TelemetryWindow.device_id, func.max(TelemetryWindow.seq).label("seq"))
        .where(TelemetryWindow.window_start_s >= since_s)
        .group_by(TelemetryWindow.device_id)
    )


def newest_window_start(session: Session) -> int | None:
    """The newest window's start (device clock: simulated in the demo), via the window_start_s index."""
    value = session.scalar(select(func.max(TelemetryWindow.window_start_s)))
    return int(value) if value is not None else None


def fleet_counts(
    session: Session, now: dt.datetime, limits: HealthThresholds, *, since_s: int
) -> FleetCounts:
    total = session.scalar(select(func.count()).select_from(Device)) or 0
    by_class = _count_by(session, Device.hardware_class)
    version_rows = session.execute(
        select(Device.current_model, Device.current_version, func.count())
        .group_by(Device.current_model, Device.current_version)
        .order_by(func.count().desc())
    ).all()
    by_version = [(f"{m} v{v}" if m is not None else "none reported", int(n)) for m, v, n in version_rows]
    stale_cut = now - dt.timedelta(seconds=limits.stale_after_s)
    offline_cut = now - dt.timedelta(seconds=limits.offline_after_s)
    health = case(
        (Device.last_seen_at.is_(None), "never_seen"),
        (Device.last_seen_at >= stale_cut, "ok"),
        (Device.last_seen_at >= offline_cut, "stale"),
        else_="offline",
    )
    by_health: dict[Health, int] = dict.fromkeys(HEALTH_ORDER, 0)
    for label, n in session.execute(select(health, func.count()).group_by(health)).all():
        by_health[label] = int(n)
    on_fallback = session.scalar(select(func.count()).where(Device.fallback_level > 0)) or 0
    battery, low = _battery_histogram(session, since_s)
    return FleetCounts(
        total=int(total),
        by_class=by_class,
        by_version=by_version,
        by_health=by_health,
        on_fallback=int(on_fallback),
        battery=battery,
        low_battery=low,
    )


def _newest_battery(session: Session, since_s: int) -> Subquery:
    """(device_id, battery_pct) of each device's newest window starting at or after ``since_s``."""
    tw = TelemetryWindow
    if session.get_bind().dialect.name == "postgresql":
        # DISTINCT ON walks the rows once in (device_id, seq) order: ~2x faster than joining MAX(seq).
        return (
            select(tw.device_id, tw.battery_pct)
            .where(tw.window_start_s >= since_s)
            .distinct(tw.device_id)
            .order_by(tw.device_id, tw.seq.desc())
            .subquery()
        )
    # SQLite: with max() the bare columns come from the row holding the maximum (documented behaviour).
    return (
        select(tw.device_id, tw.battery_pct, func.max(tw.seq))
        .where(tw.window_start_s >= since_s)
        .group_by(tw.device_id)
        .subquery()
    )


def _battery_histogram(session: Session, since_s: int) -> tuple[list[tuple[str, int]], int]:
    newest = _newest_battery(session, since_s)
    pct = newest.c.battery_pct
    bucket = case(
        *[(and_(pct >= lo, pct < hi), label) for lo, hi, label in BATTERY_BUCKETS],
        else_=NO_FIGURE,
    )
    counts = {label: int(n) for label, n in session.execute(select(bucket, func.count()).group_by(bucket))}
    histogram = [(label, counts.get(label, 0)) for _, _, label in BATTERY_BUCKETS]
    # Devices without a recent window (never reported, or quiet for the whole lookback) have no figure.
    total = session.scalar(select(func.count()).select_from(Device)) or 0
    histogram.append((NO_FIGURE, int(total) - sum(n for _, n in histogram)))
    low = sum(
        n for (lo, _, _), (_, n) in zip(BATTERY_BUCKETS, histogram, strict=False) if lo < LOW_BATTERY_PCT
    )
    return histogram, low


@dataclass(frozen=True)
class DeviceRow:
    id: str
    hardware_class: str
    version: str
    fallback_level: int | None
    last_seen_at: dt.datetime | None
    health: Health
    battery_pct: float | None
    charging: bool | None
    duty_cycle: float | None
    tags: dict[str, str]


def device_page(
    session: Session, now: dt.datetime, limits: HealthThresholds, *, since_s: int, limit: int, offset: int
) -> list[DeviceRow]:
    devices = list(session.scalars(select(Device).order_by(Device.id).limit(limit).offset(offset)))
    ids = [d.id for d in devices]
    latest: dict[str, TelemetryWindow] = {}
    if ids:
        newest = _latest_windows(since_s).where(TelemetryWindow.device_id.in_(ids)).subquery()
        for w in session.scalars(
            select(TelemetryWindow).join(
                newest,
                and_(TelemetryWindow.device_id == newest.c.device_id, TelemetryWindow.seq == newest.c.seq),
            )
        ):
            latest[w.device_id] = w
    rows = []
    for d in devices:
        w = latest.get(d.id)
        rows.append(
            DeviceRow(
                id=d.id,
                hardware_class=d.hardware_class,
                version=f"{d.current_model} v{d.current_version}" if d.current_model else "—",
                fallback_level=d.fallback_level,
                last_seen_at=d.last_seen_at,
                health=health_of(d.last_seen_at, now, limits),
                battery_pct=w.battery_pct if w else None,
                charging=w.charging if w else None,
                duty_cycle=w.duty_cycle if w else None,
                tags={str(k): str(v) for k, v in (d.tags or {}).items()},
            )
        )
    return rows
