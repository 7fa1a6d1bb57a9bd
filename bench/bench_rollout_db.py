"""Rollout stage decision for 100,000 registered devices INCLUDING the database, on PostgreSQL.

Scenario (as bench_controller.py, but stored): 100,000 devices in ``devices`` (4 hardware classes), a
rollout at its "50%" stage with ~47,500 devices exposed, 3 metrics windows per device since the stage
started in ``telemetry_windows`` (300,000 rows, 10-bin input histograms, battery), a converter baseline
for the PSI gate, every gate enabled. The soak is over and the data are good, so the decision is an
*advance* to 100 % that also schedules a burst of update commands into the outbox.

Timed (best of N, in the same run):

* baseline: ``decide()`` on the same inputs already in memory (what the controller alone costs);
* ``load_fleet`` (devices table -> FleetView columns + newest battery per device);
* ``load_totals`` (ONE GROUP BY over the stage's windows + install / error side queries);
* the full runner step ``RolloutRunner.tick_rollout``: load + decide + alerts + state, decisions and
  outbox rows written and committed (the target: <= 2 s).

    .venv/bin/python bench/bench_rollout_db.py [--devices 100000] [--repeats 3] [--write-results FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import select, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from postgres import postgres_reachable, postgres_schema_url  # noqa: E402
from release_rows import add_release  # noqa: E402

from fleet_server.db import Release, RolloutRow, make_engine, make_session_factory  # noqa: E402
from fleet_server.db.migrate import upgrade_to_head  # noqa: E402
from fleet_server.rollout_runner.baselines import BaselineCache  # noqa: E402
from fleet_server.rollout_runner.command_builder import CommandBuilder  # noqa: E402
from fleet_server.rollout_runner.fleet_loader import PointsCache, load_fleet  # noqa: E402
from fleet_server.rollout_runner.leader import LeaderLock  # noqa: E402
from fleet_server.rollout_runner.runner import RolloutRunner  # noqa: E402
from fleet_server.rollout_runner.totals_query import load_totals  # noqa: E402
from fleet_server.rollouts import ReleaseRef, RolloutSpec, decide, default_stages, groups, start_rollout  # noqa: E402
from fleet_server.rollouts.model import SchedulePlan, TargetFilter  # noqa: E402

T0 = 1_800_000_000
CLASSES = ["cortex-m4f", "esp32-s3", "pi-zero-2w", "pi-4"]
BINS = 10
MODEL = "kws"


def _report_baselines(counts: list[int]) -> dict[str, Any]:
    """A converter report's ``baselines`` section with one input feature (the runner validates it)."""
    edges = [float(e) for e in range(len(counts) + 1)]
    total = sum(counts)
    hist = {"name": "feature_0", "edges": edges, "counts": counts, "fractions": [c / total for c in counts]}
    spec = {"input_shape": [8, 1], "axis": 1, "group_bounds": [0, 1], "description": "bench"}
    score_spec = {"kind": "max_softmax", "class_ids": [0, 1]}
    return {
        "samples": total,
        "feature_spec": spec,
        "features": [hist],
        "output_score_spec": score_spec,
        "output_score": {**hist, "name": "output_score"},
    }


def median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000, out


def populate(
    url: str, n: int, artifact_dir: Path, progress: Progress, stage: int = 2
) -> tuple[str, dict[str, Any]]:
    engine = make_engine(url)
    upgrade_to_head(engine)
    ids = [f"dev-{i:06d}" for i in range(n)]
    rng = np.random.default_rng(0)
    now = dt.datetime.now(dt.UTC)
    task = progress.add_task("devices", total=n)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy(
            "COPY devices (id, hardware_class, tags, mqtt_password_hash, created_at, updated_at, "
            "current_model, current_version, battery_pct, battery_charging, battery_seq, "
            "battery_window_start_s) FROM STDIN"
        ) as copy:
            # The battery columns as the ingest worker leaves them after the windows below (newest: seq 3).
            for i, d in enumerate(ids):
                tags = json.dumps({"site": f"s{i % 7}"})
                copy.write_row((d, CLASSES[i % 4], tags, "x", now, now, MODEL, "1", 89.6, False, 3, T0 + 660))
        raw.commit()
        progress.update(task, completed=n)
    finally:
        raw.close()
    with make_session_factory(engine)() as s:
        for counter in (1, 2):
            version_dir = f"models/{MODEL}/1.{counter}.0"
            add_release(s, counter, model=MODEL, hardware_classes=CLASSES, artifact_dir=version_dir)
        s.commit()
    base_p = rng.dirichlet(np.ones(BINS) * 5)
    baseline = (base_p * 100_000).astype(int).tolist()
    report_dir = artifact_dir / "models" / MODEL / "1.2.0"
    report_dir.mkdir(parents=True)
    (report_dir / "report.json").write_text(json.dumps({"baselines": _report_baselines(baseline)}))
    spec = RolloutSpec(
        rollout_id="ro-bench",
        release=ReleaseRef(
            release_id=f"{MODEL}-2",
            model=MODEL,
            version="1.2.0",
            counter=2,
            previous_release_id=f"{MODEL}-1",
            previous_version="1.1.0",
            previous_counter=1,
        ),
        target=TargetFilter(),
        stages=default_stages(min_soak_s=900),
        schedule=SchedulePlan(devices_per_minute=600, burst=100),
        created_at=T0,
    )
    state = start_rollout(spec, T0).state
    state.stage_index = stage  # 2: "50%" (the default), 3: "100%" (every non-control device exposed)
    state.stage_started_at = T0
    with engine.connect() as conn:
        fleet = load_fleet(conn, "ro-bench", spec.target, MODEL, battery_since=0).fleet
    g = groups(state, fleet)
    state.exposed = fleet.device_ids[g.target].tolist()
    exposed = set(state.exposed)
    # 3 windows per device since the stage start, on what each device runs.
    task = progress.add_task("windows", total=3 * n)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cols = (
            "device_id, seq, window_start_s, window_len_s, duty_cycle, battery_pct, charging, inferences, "
            "positives, false_positives, latency_p50_us, latency_p95_us, latency_max_us, model_name, "
            "model_version, model_variant, fallback_level, input_feature, input_hist, output_hist, "
            "nonfinite_inputs, received_at"
        )
        with cur.copy(f"COPY telemetry_windows ({cols}) FROM STDIN") as copy:
            for i, d in enumerate(ids):
                version = 2 if d in exposed else 1
                for k in range(3):
                    hist = rng.multinomial(300, base_p).tolist()
                    copy.write_row(
                        (
                            d,
                            k + 1,
                            T0 + 60 + 300 * k,
                            300,
                            0.1,
                            90.0 - k * 0.2,
                            False,
                            1000,
                            20,
                            int(rng.integers(0, 8)),
                            900,
                            1800,
                            3000,
                            MODEL,
                            version,
                            "full_int8",
                            0,
                            0,
                            json.dumps(hist),
                            "[]",
                            0,
                            now,
                        )
                    )
                if i % 10_000 == 0:
                    progress.update(task, completed=3 * i)
        # Every exposed device finished its install (the install gate needs finished installs).
        ota_cols = (
            "device_id, ts, release_id, target_version, from_version, state, via_delta, bytes_done, "
            "bytes_total, attempt, digest, received_at"
        )
        with cur.copy(f"COPY ota_status ({ota_cols}) FROM STDIN") as copy:
            for k, d in enumerate(sorted(exposed)):
                copy.write_row(
                    (d, T0 + 30, f"{MODEL}-2", 2, 1, "committed", False, 1, 1, 1, f"{k:032d}", now)
                )
        raw.commit()
        progress.update(task, completed=3 * n)
    finally:
        raw.close()
    with make_session_factory(engine)() as s:
        s.add(
            RolloutRow(
                id="ro-bench",
                release_id=f"{MODEL}-2",
                previous_release_id=f"{MODEL}-1",
                model_name=MODEL,
                status="running",
                state=state.model_dump(mode="json"),
                revision=1,
                finished=False,
                summary={},
                created_by="bench",
            )
        )
        s.commit()
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    engine.dispose()
    return "ro-bench", {"exposed": len(exposed), "windows": 3 * n}


def run(n: int, repeats: int, stage: int = 2) -> dict[str, Any]:
    console = Console(stderr=True)
    load_before = os.getloadavg()[0]
    with postgres_schema_url("tf_bench") as url, tempfile.TemporaryDirectory() as tmp:
        with Progress(console=console, transient=True) as progress:
            rid, facts = populate(url, n, Path(tmp), progress, stage)
        engine = make_engine(url)
        now = float(T0 + 60 + 300 * 3)  # the stage soaked 960 s >= 900 s; all windows are in the lookback
        runner = RolloutRunner(
            engine=engine,
            builder=CommandBuilder(base_url="http://fleet.example:8080"),
            publisher=None,
            baselines=BaselineCache(Path(tmp)),
            leader=LeaderLock(engine, 0x62656E6368),
            now=lambda: now,
        )
        with make_session_factory(engine)() as s:
            row = s.get(RolloutRow, rid)
            stored_state = row.state
            release = s.get(Release, "kws-2")
            baseline = runner.baselines.get(s, release)
        from fleet_server.rollouts import RolloutState

        state = RolloutState.model_validate(stored_state)
        spec = state.spec

        cache = PointsCache()  # as the runner keeps it between ticks

        def fleet() -> Any:
            with engine.connect() as conn:
                return load_fleet(conn, rid, spec.target, MODEL, battery_since=int(now) - 1800, points=cache)

        t_fleet, loaded = median_ms(fleet, repeats)

        def totals() -> Any:
            with engine.connect() as conn:
                return load_totals(
                    conn,
                    loaded.fleet,
                    model_name=MODEL,
                    since=state.stage_started_at,
                    exposed=state.exposed,
                    candidate_counter=2,
                    previous_counter=1,
                    release_id="kws-2",
                    baseline_bins={f: len(h) for f, h in baseline.items()},
                    devices=g.commanded | g.control,  # as the runner asks
                )

        g = groups(state, loaded.fleet)
        t_totals, tot = median_ms(totals, repeats)
        t_decide, outcome = median_ms(lambda: decide(state, loaded.fleet, tot, now, baseline), repeats)

        def reset() -> None:
            with engine.begin() as conn:
                conn.execute(
                    update(RolloutRow)
                    .where(RolloutRow.id == rid)
                    .values(state=stored_state, revision=1, finished=False)
                )
                conn.exec_driver_sql("DELETE FROM rollout_decisions")
                conn.exec_driver_sql("DELETE FROM rollout_commands")

        times = []
        tick_out = None
        reset()
        runner.tick_rollout(rid)  # warm-up: the runner's cohort point cache and baseline cache fill once
        for _ in range(repeats):
            reset()
            t = time.perf_counter()
            tick_out = runner.tick_rollout(rid)
            times.append(time.perf_counter() - t)
        t_tick = float(np.median(times)) * 1000
        with engine.connect() as conn:
            state_bytes = len(json.dumps(conn.execute(select(RolloutRow.state)).scalar()))
        runner.leader.release()
        engine.dispose()
    return {
        "devices": n,
        "stage": spec.stages[stage].name,
        "windows": facts["windows"],
        "exposed": facts["exposed"],
        "decision": [d.action for d in outcome.decisions],
        "reason": [d.reason for d in outcome.decisions],
        "commands": {c.kind: len(c.device_ids) for c in outcome.commands},
        "tick_result": {"decisions": tick_out[0], "commands": tick_out[1]} if tick_out else None,
        "state_json_bytes": state_bytes,
        "ms": {
            "baseline_decide_in_memory": round(t_decide, 1),
            "load_fleet": round(t_fleet, 1),
            "load_totals": round(t_totals, 1),
            "tick_rollout_total": round(t_tick, 1),
        },
        "tick_ms_each": [round(x * 1000, 1) for x in times],
        "repeats": repeats,
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }


def write_results(path: Path, r: dict[str, Any], command: str) -> None:
    ms = r["ms"]
    tick = ms["tick_rollout_total"]
    text = f"""# Rollout runner with the database: benchmark results

- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC
- Command: `{command}`
- Machine: {platform.machine()}, Python {platform.python_version()}, PostgreSQL on 127.0.0.1 (2 cores shared
  with other jobs; 1-min load average {r["load_average"][0]} before, {r["load_average"][1]} after; median
  of {r["repeats"]}; full steps one by one: {r["tick_ms_each"]} ms)
- Scenario: {r["devices"]:,} registered devices, {r["windows"]:,} metrics windows since the stage start (3 per
  device, 10-bin input histograms), stage "{r["stage"]}" with {r["exposed"]:,} exposed, converter baseline
  for the PSI gate, every gate enabled. Decision: {r["decision"]}; commands: {r["commands"]}.

| what | ms |
|:--|--:|
| baseline: `decide()` on the same inputs in memory | {ms["baseline_decide_in_memory"]} |
| `load_fleet` (devices -> FleetView columns with the battery kept on the device row) | {ms["load_fleet"]} |
| `load_totals` (cohort + control windows: one pass, sums + drain + histogram text) | {ms["load_totals"]} |
| **full runner step** (load, decide, alerts, state + decisions + outbox committed) | **{tick}** |

Target: stage decision including the DB <= 2,000 ms. Full step / in-memory decide =
{ms["tick_rollout_total"] / max(ms["baseline_decide_in_memory"], 0.1):.1f}x. Stored state JSON:
{r["state_json_bytes"]:,} bytes (the exposure list).
"""
    # Only this section is regenerated: the sections after it (recovery, takeover, notes) are kept.
    old = path.read_text() if path.exists() else ""
    rest = old[old.index("\n## ") :] if "\n## " in old else ""
    path.write_text(text + rest)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stage", type=int, default=2, help='stage index: 2 = "50%%", 3 = "100%%"')
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--write-results", type=Path)
    args = ap.parse_args()
    if not postgres_reachable():
        raise SystemExit("PostgreSQL does not answer on 127.0.0.1:5432")
    r = run(args.devices, args.repeats, args.stage)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        table = Table(title=f"rollout stage decision, {r['devices']:,} devices, PostgreSQL")
        table.add_column("what")
        table.add_column("ms", justify="right")
        for k, v in r["ms"].items():
            table.add_row(k, f"{v:.1f}")
        Console().print(table)
        Console().print(
            f"decision {r['decision']} {r['reason']}, commands {r['commands']}, exposed {r['exposed']:,}"
        )
    if args.write_results:
        write_results(args.write_results, r, "python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()
