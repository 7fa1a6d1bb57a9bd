"""Drift evaluation benchmark: 10k devices x 24 h of metrics windows on PostgreSQL.

    .venv/bin/python bench/bench_drift.py [--devices 10000] [--hours 24] [--window-s 600] [--repeat 3]
        [--write-results bench/RESULTS-drift.md] [--json]

Setup (not timed; its duration is printed): a private PostgreSQL schema (tests/support/postgres.py),
migrated; a release with a converter baseline (converters.baselines on synthetic calibration data,
4 features x 10 bins) in a temporary artifact store; ``--devices`` devices in two hardware classes;
``devices x hours x 3600 / window_s`` windows generated server-side (generate_series), each with a
10-bin input histogram of ~600 counts: the baseline's profile, drifted for half the esp32-s3 devices.

Timed, each ``--repeat`` times (best and median):

* ``cohort_sums`` alone: the SQL that sums histograms bin by bin and the counts, grouped by hardware
  class (cohorts "all" + one per class);
* ``evaluate_version``: the whole DB path as the periodic evaluator runs it: baseline load, the sums,
  PSI / KS / JS + alert rules per cohort, snapshots, alerts, retraining events, commit;
* the same with the battery-drain retraining rule on (adds the per-device LAG query);
* baseline, same run: the same statistics (masked sums per cohort + ``evaluate_alerts``) on pre-summed
  per-device numpy arrays already in memory, i.e. everything except reading the windows;
* for reference, fetching the raw windows into Python (what summing outside the database would cost).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "support"))

from postgres import postgres_reachable, postgres_schema_url  # noqa: E402

T0 = 1_795_000_000
FEATURES = 4
BINS = 10
COUNTS_PER_WINDOW = 600


def _baseline() -> tuple[Any, list[list[int]], list[list[int]]]:
    """Converter baseline + per-feature count profiles of an undrifted and a drifted window."""
    from converters.baselines import bin_counts, feature_summary, histogram, make_feature_spec, quantile_edges
    from converters.report import Baselines

    rng = np.random.default_rng(0)
    shape = (8, FEATURES)
    calib = rng.normal(0, 1, (4000, *shape))
    spec = make_feature_spec(shape)
    feats = feature_summary(calib, spec)
    edges = [quantile_edges(feats[:, i], BINS) for i in range(FEATURES)]
    model = Baselines(
        samples=len(calib),
        feature_spec=spec,
        features=[histogram(f"feature_{i}", feats[:, i], edges[i]) for i in range(FEATURES)],
        output_score_spec={"kind": "max_softmax", "class_ids": [0, 1]},
        output_score=histogram("output_score", rng.random(4000), [i / 10 for i in range(11)]),
    )
    normal = feature_summary(rng.normal(0, 1, (COUNTS_PER_WINDOW, *shape)), spec)
    drifted = feature_summary(rng.normal(0.6, 1, (COUNTS_PER_WINDOW, *shape)), spec)
    prof_n = [bin_counts(normal[:, i], edges[i]).tolist() for i in range(FEATURES)]
    prof_d = [bin_counts(drifted[:, i], edges[i]).tolist() for i in range(FEATURES)]
    return model, prof_n, prof_d


def _setup(engine: Any, artifact_dir: Path, devices: int, windows: int, window_s: int) -> dict[str, float]:
    from sqlalchemy import text

    from fleet_server.db import MlModel, ModelVersion, Release, make_session_factory

    model, prof_n, prof_d = _baseline()
    (artifact_dir / "models/kws/1.0.0").mkdir(parents=True)
    (artifact_dir / "models/kws/1.0.0/report.json").write_text(
        json.dumps({"baselines": model.model_dump(mode="json")})
    )
    with make_session_factory(engine)() as s:
        ml = MlModel(name="kws")
        mv = ModelVersion(model=ml, version="1.0.0", artifact_dir="models/kws/1.0.0")
        s.add_all([ml, mv])
        s.flush()
        s.add(
            Release(
                id="kws-3",
                model_version_id=mv.id,
                model_name="kws",
                version="1.0.0",
                counter=3,
                variant="full_int8",
                hardware_classes=["esp32-s3", "pi-zero-2w"],
                artifact_path="x",
                artifact_sha256="0" * 64,
                artifact_length=1,
                manifest_path="x",
                manifest_sha256="0" * 64,
                manifest_length=1,
                key_id="k",
                expires_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
                created_at=dt.datetime.fromtimestamp(T0 - 86_400, dt.UTC),
            )
        )
        s.commit()
    t = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO devices (id, hardware_class, tags, mqtt_password_hash, created_at, updated_at) "
                "SELECT 'dev-' || g, CASE WHEN g % 2 = 0 THEN 'esp32-s3' ELSE 'pi-zero-2w' END, '{}'::json, "
                "'x', now(), now() FROM generate_series(0, :n - 1) g"
            ),
            {"n": devices},
        )
        conn.execute(text("CREATE TEMP TABLE profiles (feature int, drifted bool, counts int[])"))
        for f in range(FEATURES):
            conn.execute(
                text("INSERT INTO profiles VALUES (:f, false, :n), (:f, true, :d)"),
                {"f": f, "n": prof_n[f], "d": prof_d[f]},
            )
        # Drifted: half the esp32-s3 devices (even ids, g % 4 = 0). Each count gets +0..2 noise.
        conn.execute(
            text(
                """
                INSERT INTO telemetry_windows (
                    device_id, seq, window_start_s, window_len_s, duty_cycle, battery_pct, charging,
                    inferences, positives, false_positives, latency_p50_us, latency_p95_us, latency_max_us,
                    model_name, model_version, model_variant, fallback_level, input_feature, input_hist,
                    output_hist, nonfinite_inputs, received_at)
                SELECT 'dev-' || d, w, :t0 + w * :ws, :ws, 0.1, 90 - w * 0.01, false,
                       650, 20, 1, 1000, 2000, 5000, 'kws', 3, 'full_int8', 0, d % 4,
                       to_json(ARRAY(SELECT c + floor(random() * 3)::int FROM unnest(p.counts) c)),
                       '[]'::json, 0, now()
                FROM generate_series(0, :n - 1) d
                CROSS JOIN generate_series(0, :w - 1) w
                JOIN profiles p ON p.feature = d % 4 AND p.drifted = (d % 4 = 0)
                """
            ),
            {"t0": T0, "ws": window_s, "n": devices, "w": windows},
        )
    fill_s = time.perf_counter() - t
    t = time.perf_counter()
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE telemetry_windows"))
    return {"fill_s": fill_s, "analyze_s": time.perf_counter() - t}


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times), out


def run(devices: int, hours: int, window_s: int, repeat: int) -> dict[str, Any]:
    from sqlalchemy import BigInteger, cast, func, select, text

    from fleet_server.db import Device, TelemetryWindow, make_engine, make_session_factory
    from fleet_server.db.migrate import upgrade_to_head
    from fleet_server.drift import evaluate_version
    from fleet_server.drift.baselines import load_baseline
    from fleet_server.drift.evaluator import rules_of
    from fleet_server.drift.sums import _hist_query, cohort_sums
    from fleet_server.rollouts.alerts import GroupFigures, evaluate_alerts
    from fleet_server.settings import Settings

    windows_per_device = hours * 3600 // window_s
    start = dt.datetime.fromtimestamp(T0, dt.UTC)
    end = start + dt.timedelta(hours=hours)
    now = end
    result: dict[str, Any] = {
        "devices": devices,
        "hours": hours,
        "window_s": window_s,
        "windows": devices * windows_per_device,
        "repeat": repeat,
        "load_avg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    with tempfile.TemporaryDirectory() as tmp, postgres_schema_url("tf_bench") as url:
        engine = make_engine(url)
        upgrade_to_head(engine)
        artifacts = Path(tmp)
        result.update(_setup(engine, artifacts, devices, windows_per_device, window_s))
        settings = Settings(data_dir=Path(tmp), database_url=url, artifact_dir=artifacts)
        battery_settings = settings.model_copy(update={"drift_battery_drain_spec_pct_per_h": 5.0})
        factory = make_session_factory(engine)
        with factory() as s:
            result["table_mb"] = round(
                s.scalar(text("SELECT pg_total_relation_size('telemetry_windows')")) / 2**20, 1
            )
            baseline = load_baseline(s, artifacts, "kws", 3)

        def sums() -> Any:
            with factory() as s:
                return cohort_sums(
                    s,
                    model_name="kws",
                    model_version=3,
                    since_s=T0,
                    until_s=T0 + hours * 3600,
                    bins=baseline.bins,
                )

        def evaluate(conf: Settings) -> Callable[[], Any]:
            def go() -> Any:
                with factory() as s:
                    out = evaluate_version(
                        s, conf, model_name="kws", model_version=3, range_start=start, range_end=end, now=now
                    )
                    s.commit()
                    return out

            return go

        def arrow_sums() -> Any:
            # The first version: one ``input_hist ->> i`` per bin (PostgreSQL re-parses the json each time).
            with factory() as s:
                return s.execute(arrow_stmt()).all()

        def arrow_stmt() -> Any:
            w = TelemetryWindow
            return (
                select(
                    Device.hardware_class,
                    w.input_feature,
                    *(func.sum(cast(w.input_hist[i].as_string(), BigInteger)) for i in range(BINS)),
                )
                .select_from(w)
                .outerjoin(Device, Device.id == w.device_id)
                .where(
                    w.model_name == "kws", w.model_version == 3, func.json_array_length(w.input_hist) == BINS
                )
                .group_by(Device.hardware_class, w.input_feature)
            )

        def explain(stmt: Any) -> dict[str, float]:
            """Wall time and processes (leader + parallel workers) of one EXPLAIN ANALYZE run."""
            sql = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
            with factory() as s:
                plan = "\n".join(r[0] for r in s.execute(text("EXPLAIN (ANALYZE) " + sql)))
            ms = float(re.search(r"Execution Time: ([\d.]+)", plan).group(1))  # type: ignore[union-attr]
            workers = sum(int(x) for x in re.findall(r"Workers Launched: (\d+)", plan))
            return {"wall_ms": round(ms, 1), "processes": 1 + workers}

        sums()  # warm-up: the table into the page cache, plans cached
        # Interleaved, so that the load of the (shared) machine hits every variant alike.
        named = {
            "cohort_sums (SQL: histograms + counts by hardware class)": sums,
            "for comparison: histogram sums alone with `input_hist ->> i` per bin": arrow_sums,
            "evaluate_version (sums + statistics + store), battery rule off": evaluate(settings),
            "evaluate_version, battery rule on (+ per-device LAG query)": evaluate(battery_settings),
        }
        runs: dict[str, list[float]] = {k: [] for k in named}
        last: dict[str, Any] = {}
        for _ in range(repeat):
            for k, fn in named.items():
                t = time.perf_counter()
                last[k] = fn()
                runs[k].append(time.perf_counter() - t)
        timings: dict[str, tuple[float, float]] = {k: (min(v), statistics.median(v)) for k, v in runs.items()}
        summed = last["cohort_sums (SQL: histograms + counts by hardware class)"]

        def scoped(stmt: Any) -> Any:
            w = TelemetryWindow
            return (
                stmt.select_from(w)
                .outerjoin(Device, Device.id == w.device_id)
                .where(w.model_name == "kws", w.model_version == 3)
            )

        with factory() as s:
            hist_stmt = _hist_query(s, scoped, [Device.hardware_class], baseline.bins)
        result["explain"] = {
            "histogram sums, array parsed once (translate -> bigint[])": explain(hist_stmt),
            "histogram sums, `input_hist ->> i` per bin": explain(arrow_stmt()),
        }
        outcomes = last["evaluate_version (sums + statistics + store), battery rule off"]
        result["statuses"] = {o.cohort: o.status for o in outcomes}

        # Baseline: pre-summed per-device arrays (devices x bins per feature) in memory.
        with factory() as s:
            t = time.perf_counter()
            per_device = s.execute(
                select(
                    TelemetryWindow.device_id,
                    TelemetryWindow.input_feature,
                    func.count(),
                    func.sum(TelemetryWindow.inferences),
                    func.sum(TelemetryWindow.positives),
                    func.sum(TelemetryWindow.false_positives),
                    *(
                        func.sum(cast(TelemetryWindow.input_hist[i].as_string(), BigInteger))
                        for i in range(BINS)
                    ),
                ).group_by(TelemetryWindow.device_id, TelemetryWindow.input_feature)
            ).all()
            result["presum_query_s"] = time.perf_counter() - t
        ids = [r[0] for r in per_device]
        n = len(ids)
        feature = np.array([r[1] for r in per_device])
        counts = np.array([r[3:6] for r in per_device], dtype=np.int64)
        hist = np.array([r[6:] for r in per_device], dtype=np.int64)
        esp = np.array([int(i.split("-")[1]) % 2 == 0 for i in ids])
        masks = {"all": np.ones(n, bool), "hw:esp32-s3": esp, "hw:pi-zero-2w": ~esp}
        rules = rules_of(settings)

        def numpy_stats() -> dict[str, str]:
            out = {}
            for cohort, m in masks.items():
                c = counts[m].sum(axis=0)
                fig = GroupFigures(
                    devices=int(m.sum()),
                    inferences=int(c[0]),
                    positives=int(c[1]),
                    false_positives=int(c[2]),
                    input_hist={f: hist[m & (feature == f)].sum(axis=0).tolist() for f in range(FEATURES)},
                )
                rep = evaluate_alerts(
                    "kws", "3", cohort, fig, now.timestamp(), baseline=baseline.features, rules=rules
                )
                out[cohort] = rep.drift.status
            return out

        best, med, np_status = _timed(numpy_stats, max(repeat, 5))
        timings["baseline: same statistics on pre-summed numpy arrays"] = (best, med)
        result["numpy_statuses"] = np_status
        assert np_status == result["statuses"], (np_status, result["statuses"])

        with factory() as s:
            t = time.perf_counter()
            rows = s.execute(
                select(
                    TelemetryWindow.device_id, TelemetryWindow.input_feature, TelemetryWindow.input_hist
                ).where(TelemetryWindow.model_name == "kws", TelemetryWindow.model_version == 3)
            ).all()
            timings["reference: fetch the raw windows into Python (no summing)"] = (
                time.perf_counter() - t,
            ) * 2
            del rows
        result["timings_s"] = {
            k: {"best": round(b, 4), "median": round(m, 4)} for k, (b, m) in timings.items()
        }
        result["sums_all_samples"] = int(sum(sum(h) for h in summed["all"].input_hist.values()))
        engine.dispose()
    return result


def markdown(r: dict[str, Any], command: str) -> str:
    lines = [
        "# Drift evaluation benchmark results",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Command: `{command}`",
        f"- Machine: {platform.machine()}, Python {platform.python_version()}, PostgreSQL on 127.0.0.1 "
        "(2 cores shared with other jobs)",
        f"- Data: {r['devices']:,} devices x {r['hours']} h of {r['window_s']} s windows = {r['windows']:,} "
        f"windows ({r['table_mb']} MB table with indexes), 4 features x 10 bins, ~600 counts per window; "
        f"generated server-side in {r['fill_s']:.1f} s (+ {r['analyze_s']:.1f} s VACUUM ANALYZE).",
        f"- Cohorts evaluated: {', '.join(f'{k} -> {v}' for k, v in sorted(r['statuses'].items()))} "
        "(numpy baseline agrees).",
        f"- best / median of {r['repeat']} interleaved runs after one warm-up "
        f"(numpy: of {max(r['repeat'], 5)}); load average at the start: {r['load_avg']}",
        "",
        "| what | best s | median s |",
        "|:--|--:|--:|",
    ]
    for k, v in r["timings_s"].items():
        lines.append(f"| {k} | {v['best']:.3f} | {v['median']:.3f} |")
    lines += ["", "EXPLAIN ANALYZE of the histogram query alone (one run each):", ""]
    lines += ["| query | wall ms | processes (leader + parallel workers) |", "|:--|--:|--:|"]
    for k, v in r["explain"].items():
        lines.append(f"| {k} | {v['wall_ms']:.0f} | {v['processes']} |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--window-s", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write-results", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not postgres_reachable():
        print("PostgreSQL does not answer on 127.0.0.1:5432; nothing measured")
        return 1
    r = run(args.devices, args.hours, args.window_s, args.repeat)
    text = markdown(r, " ".join([".venv/bin/python", *sys.argv]))
    print(json.dumps(r, indent=2) if args.json else text)
    if args.write_results:
        args.write_results.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
