"""Dashboard page time on a large fleet: overview (GROUP BYs over devices + newest windows) and telemetry.

Builds N devices with W telemetry windows each (rows inserted in bulk, as the ingest worker stores them),
then times full requests through the app (TestClient: routing, auth, SQL, templates, SVG) on PostgreSQL
(and SQLite with --db both). Baseline in the same run and process: GET /api/v1/devices?limit=50, the REST
list of one page of devices (auth + one SELECT + JSON).

Usage: .venv/bin/python bench/bench_dashboard.py [--devices 100000] [--windows 3]
       [--db postgresql|sqlite|both]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from postgres import postgres_reachable, postgres_schema_url  # noqa: E402

REPEATS = 7


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as d:
            yield f"sqlite:///{d}/bench.db"
        return
    with postgres_schema_url("tf_bench_dash") as url:
        yield url


def fill(engine: object, n_devices: int, n_windows: int) -> None:
    from sqlalchemy import insert

    from fleet_server.db import Device, TelemetryWindow

    now = dt.datetime.now(dt.UTC)
    start = int(now.timestamp()) - n_windows * 300
    classes = ["esp32-s3", "cortex-m4f", "pi-zero-2w", "pi-4"]
    with engine.begin() as conn:  # type: ignore[attr-defined]
        for lo in range(0, n_devices, 10_000):
            ids = range(lo, min(lo + 10_000, n_devices))
            conn.execute(
                insert(Device),
                [
                    {
                        "id": f"dev-{i:06d}",
                        "hardware_class": classes[i % 4],
                        "tags": {"site": f"s{i % 7}"},
                        "mqtt_password_hash": "x",
                        "created_at": now,
                        "updated_at": now,
                        "last_seen_at": now - dt.timedelta(seconds=(i * 37) % 7200),
                        "current_model": "kws",
                        "current_version": str(1 + i % 3),
                        "fallback_level": int(i % 50 == 0),
                    }
                    for i in ids
                ],
            )
            conn.execute(
                insert(TelemetryWindow),
                [
                    {
                        "device_id": f"dev-{i:06d}",
                        "seq": k,
                        "window_start_s": start + 300 * k,
                        "window_len_s": 300,
                        "duty_cycle": 0.08,
                        "battery_pct": float((i * 13) % 100),
                        "battery_mv": 3900,
                        "charging": False,
                        "est_battery_life_min": None,
                        "inferences": 3000,
                        "positives": 60,
                        "false_positives": i % 3,
                        "latency_p50_us": 8000,
                        "latency_p95_us": 12000,
                        "latency_max_us": 30000,
                        "model_name": "kws",
                        "model_version": 1 + i % 3,
                        "model_variant": "full_int8",
                        "fallback_level": int(i % 50 == 0),
                        "input_feature": 0,
                        "input_hist": [10, 20, 30],
                        "output_hist": [5, 5],
                        "nonfinite_inputs": 0,
                        "received_at": now,
                    }
                    for i in ids
                    for k in range(n_windows)
                ],
            )


def timed(client: object, path: str, headers: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        r = client.get(path, headers=headers or {})  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, (path, r.status_code, r.text[-300:])
    return statistics.median(times) * 1000


def bench(kind: str, n_devices: int, n_windows: int) -> None:
    from fastapi.testclient import TestClient

    from fleet_server.api import create_app
    from fleet_server.auth import Role, issue_token
    from fleet_server.settings import Settings

    with database(kind) as url, tempfile.TemporaryDirectory() as data:
        app = create_app(Settings(data_dir=Path(data), database_url=url, rollout_runner_enabled=False))
        t0 = time.perf_counter()
        fill(app.state.engine, n_devices, n_windows)
        if kind == "postgresql":
            with app.state.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        fill_s = time.perf_counter() - t0
        with app.state.session_factory() as s:
            token = issue_token(s, name="bench", role=Role.admin, created_by="bench").secret
            s.commit()
        with TestClient(app) as c:
            page = c.get("/dashboard/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            assert c.post("/dashboard/login", data={"token": token, "csrf": csrf}).status_code == 200
            base = timed(c, "/api/v1/devices?limit=50", {"Authorization": f"Bearer {token}"})
            overview = timed(c, "/dashboard?limit=50")
            overview_last = timed(c, f"/dashboard?limit=50&page={n_devices // 50}")
            telemetry = timed(c, "/dashboard/telemetry?hours=1")
        app.state.engine.dispose()
    print(
        f"{kind:10s} devices={n_devices:,} windows={n_devices * n_windows:,} (filled in {fill_s:.0f} s)\n"
        f"  baseline GET /api/v1/devices?limit=50   median {base:8.1f} ms\n"
        f"  GET /dashboard (overview, page 1)       median {overview:8.1f} ms\n"
        f"  GET /dashboard (overview, last page)    median {overview_last:8.1f} ms\n"
        f"  GET /dashboard/telemetry?hours=1        median {telemetry:8.1f} ms",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--db", choices=["postgresql", "sqlite", "both"], default="postgresql")
    args = parser.parse_args()
    kinds = ["postgresql", "sqlite"] if args.db == "both" else [args.db]
    for kind in kinds:
        if kind == "postgresql" and not postgres_reachable():
            print("PostgreSQL not reachable on 127.0.0.1:5432; skipped")
            continue
        bench(kind, args.devices, args.windows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
