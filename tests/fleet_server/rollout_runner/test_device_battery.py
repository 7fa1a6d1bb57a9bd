"""The newest battery state on the device row (migration 0008): written with each ingest batch, never
overwritten by a replayed older window, read by load_fleet within the lookback (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import math

from runner_support import MODEL, add_devices, store_windows, window
from sqlalchemy import select

from fleet_server.db import Device, make_engine
from fleet_server.ingest.store import update_device_battery, window_row
from fleet_server.rollout_runner.fleet_loader import load_fleet
from fleet_server.rollouts import TargetFilter

NOW = dt.datetime.now(dt.UTC)


def _battery(engine, device_id: str) -> tuple:
    with engine.connect() as conn:
        d = Device.__table__.c
        return tuple(
            conn.execute(
                select(d.battery_pct, d.battery_charging, d.battery_seq, d.battery_window_start_s).where(
                    d.id == device_id
                )
            ).one()
        )


def test_newest_window_wins_and_replays_change_nothing(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        a, b = add_devices(engine, 2, counter=1)
        assert _battery(engine, a) == (None, None, None, None)
        # One batch with three windows of a: the highest seq is kept, whatever the order in the batch.
        store_windows(
            engine,
            [
                window(a, 5, 10_000, 1, battery=80.0),
                window(a, 7, 10_600, 1, battery=77.0, charging=True),
                window(a, 6, 10_300, 1, battery=78.0),
            ],
        )
        assert _battery(engine, a) == (77.0, True, 7, 10_600)
        assert _battery(engine, b) == (None, None, None, None)
        # A replayed older window (agent disk buffer after a reconnect) and a duplicate change nothing.
        with engine.begin() as conn:
            update_device_battery(conn, [window_row(window(a, 3, 9_000, 1, battery=95.0), NOW)])
            update_device_battery(conn, [window_row(window(a, 7, 10_600, 1, battery=12.0), NOW)])
        assert _battery(engine, a) == (77.0, True, 7, 10_600)
        # A newer window without a battery reading (mains powered now) is the newest state.
        store_windows(engine, [window(a, 8, 10_900, 1, battery=None)])
        assert _battery(engine, a) == (None, False, 8, 10_900)
        # Unknown devices and empty batches are no error.
        with engine.begin() as conn:
            update_device_battery(conn, [window_row(window("ghost", 1, 1, 1, battery=50.0), NOW)])
            update_device_battery(conn, [])
    finally:
        engine.dispose()


def test_load_fleet_reads_the_device_row_within_the_lookback(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        ids = add_devices(engine, 3, counter=1)
        store_windows(
            engine,
            [window(ids[0], 1, 10_000, 1, battery=40.0), window(ids[1], 1, 5_000, 1, battery=15.0)],
        )
        with engine.connect() as conn:
            fleet = load_fleet(conn, "ro-b", TargetFilter(), MODEL, battery_since=8_000).fleet
            every = load_fleet(conn, "ro-b", TargetFilter(), MODEL, battery_since=0).fleet
        assert fleet.battery_pct[0] == 40.0
        assert math.isnan(fleet.battery_pct[1])  # its newest report is older than the lookback: unknown
        assert math.isnan(fleet.battery_pct[2])  # never reported
        assert every.battery_pct[1] == 15.0
        assert not fleet.charging.any()
    finally:
        engine.dispose()
