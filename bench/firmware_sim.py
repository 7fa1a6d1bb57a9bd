"""How fast the simulated hardware runs: wall seconds per simulated hour of a duty-cycled device.

Each scenario wakes once per ``period`` simulated seconds, reads the sensor, records a fixed
host-measured inference time (no real inference: this measures the simulator only), transmits a
small telemetry message every minute and sleeps until the next wake-up. The baseline, measured in
the same run, is the bare cost of the same number of window draws (per-sample seeded generator and
a copy of the window) without the board around it.

    .venv/bin/python bench/firmware_sim.py [--hours 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from firmware_stubs.board import make_simulated_board
from firmware_stubs.power import PluggedIn
from firmware_stubs.sensor_streams import DriftSpec
from firmware_stubs.sensors import Task, task_pools

HOST_INFERENCE_S = 0.0002  # a small model's invoke time on the build host
TELEMETRY_BYTES = 200

SCENARIOS: list[tuple[str, Task, float, bool]] = [
    # (profile, task, wake period in simulated s, plugged charger)
    ("cortex-m4f", "kws", 1.0, False),
    ("esp32-s3", "kws", 1.0, False),
    ("pi-zero-2w", "digits", 1.0, False),
    ("pi-4", "digits", 10.0, True),
]


def baseline_s(task: Task, n: int) -> float:
    pool = task_pools(task).nominal
    start = time.perf_counter()
    for i in range(n):
        rng = np.random.default_rng([0, i])
        _ = np.array(pool.windows[int(rng.integers(len(pool)))], dtype=np.float32)
    return time.perf_counter() - start


def run(
    profile: str, task: Task, period: float, plugged: bool, hours: float, root: Path
) -> dict[str, object]:
    board = make_simulated_board(profile, task=task, flash_root=root,
                                 charging=PluggedIn(charge_ma=500) if plugged else None)
    board.stream.inject_drift(DriftSpec(start_s=hours * 1800, use_drifted_pool=task == "kws",
                                        shift=0.0 if task == "kws" else 0.1))
    end = hours * 3600
    wakes = 0
    start = time.perf_counter()
    while board.clock.monotonic() < end:
        woke = board.clock.monotonic()
        board.read_sensor()
        board.record_energy(active_seconds=HOST_INFERENCE_S)
        if wakes % max(1, round(60 / period)) == 0:
            board.record_energy(radio_bytes=TELEMETRY_BYTES)
        wakes += 1
        board.clock.sleep(max(0.0, woke + period - board.clock.monotonic()))
    wall = time.perf_counter() - start
    report = board.power_report()
    return {
        "profile": profile, "task": task, "period_s": period, "wakes": wakes, "sim_hours": hours,
        "wall_s": wall, "wall_s_per_sim_hour": wall / hours, "baseline_s": baseline_s(task, wakes),
        "battery_percent": board.battery().percent, "average_ma": report.average_ma,
        "estimated_life_h": report.estimated_life_s / 3600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours per scenario")
    parser.add_argument("--json", action="store_true", help="machine output")
    args = parser.parse_args()
    if not args.hours > 0:
        parser.error("--hours must be positive")
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as tmp:
        rows = [run(p, t, per, pl, args.hours, Path(tmp) / p) for p, t, per, pl in SCENARIOS]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"firmware_stubs: wall time per simulated hour ({args.hours:g} h per scenario)")
    for col in ("profile", "task", "wake every", "wakes", "wall s / sim h", "baseline s (draws only)",
                "battery %", "avg mA", "est. life h"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["profile"]), str(r["task"]), f"{r['period_s']:g} s", str(r["wakes"]),
            f"{r['wall_s_per_sim_hour']:.3f}", f"{r['baseline_s']:.3f}", f"{r['battery_percent']:.3f}",
            f"{r['average_ma']:.3f}", f"{r['estimated_life_h']:.1f}",
        )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
