"""Telemetry codec benchmark: bytes per window, encode/decode time, RSS added by importing the package.

RSS is measured twice: step by step through the pydantic (server) stack, and as "device path vs pydantic
path" — fresh interpreters that import numpy (the baseline), then either the pydantic-free device codec
+ aggregation or the pydantic schemas + codec + aggregation, aggregate and encode one window and decode
one command; both are reported as MB added over the same Python + numpy baseline, in the same run.

    .venv/bin/python bench/bench_telemetry.py            # Rich tables
    .venv/bin/python bench/bench_telemetry.py --json     # machine-readable figures
    .venv/bin/python bench/bench_telemetry.py --write-results bench/RESULTS-telemetry.md

Every timing is printed next to a baseline measured in the same run: ``json.dumps``/``json.loads`` of the
equivalent plain dict (what a hand-rolled agent would do without schemas), and raw ``cbor2`` of the same
positional array (the floor for our binary form).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

import cbor2
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from telemetry import device_codec as dc
from telemetry.codec import decode, decode_cbor, decode_json, encode, encode_cbor, encode_json
from telemetry.schemas import U16_MAX, U32_MAX, MetricsWindow, ModelRef, Ping, ShadowFigures

ROOT = Path(__file__).resolve().parent.parent


def realistic_window(histograms: bool = True, shadow: bool = True) -> MetricsWindow:
    """A 5-minute window of a keyword-spotting Pi Zero: 10-bin input and output histograms."""
    return MetricsWindow(
        device_id="pi-zero-0042",
        seq=12_345,
        window_start_s=1_795_000_000,
        window_len_s=300,
        duty_cycle=0.0812,
        battery_pct=87.5,
        battery_mv=3987,
        charging=False,
        est_battery_life_min=4321,
        inferences=3000,
        positives=120,
        false_positives=7,
        latency_p50_us=8123,
        latency_p95_us=12_456,
        latency_max_us=40_123,
        model=ModelRef(name="kws-yesno", version=7, variant="full_int8"),
        input_feature=3,
        input_hist=[10, 200, 300, 400, 500, 600, 500, 300, 150, 40] if histograms else [],
        output_hist=[1000, 800, 400, 200, 150, 120, 100, 90, 80, 60] if histograms else [],
        shadow=ShadowFigures(
            candidate_version=8,
            samples=300,
            agreements=291,
            candidate_positives=13,
            candidate_false_positives=1,
            candidate_latency_p50_us=8200,
            candidate_latency_p95_us=13_000,
        )
        if shadow
        else None,
    )


def worst_case_window() -> MetricsWindow:
    """Longest strings, every scalar at its maximum, 16 + 10 bins of 16-bit counts, shadow on."""
    n = U32_MAX
    return MetricsWindow(
        device_id="d" * 36,
        seq=n,
        window_start_s=n,
        window_len_s=U16_MAX,
        duty_cycle=0.1234,
        battery_pct=99.9,
        battery_mv=U16_MAX,
        est_battery_life_min=n,
        inferences=n,
        positives=n,
        false_positives=n,
        latency_p50_us=n,
        latency_p95_us=n,
        latency_max_us=n,
        model=ModelRef(name="m" * 24, version=n, variant="dynamic_int8"),
        fallback_level=15,
        input_feature=255,
        input_hist=[U16_MAX] * 16,
        output_hist=[U16_MAX] * 10,
        nonfinite_inputs=U16_MAX,
        shadow=ShadowFigures(
            candidate_version=n,
            samples=n,
            agreements=n,
            candidate_positives=n,
            candidate_false_positives=n,
            candidate_latency_p50_us=n,
            candidate_latency_p95_us=n,
        ),
    )


def sizes() -> list[dict[str, Any]]:
    cases = {
        "realistic, no histograms, no shadow": realistic_window(histograms=False, shadow=False),
        "realistic, 10+10-bin histograms, no shadow": realistic_window(shadow=False),
        "realistic, 10+10-bin histograms + shadow": realistic_window(),
        "worst case (16+10 bins, all fields max)": worst_case_window(),
    }
    return [
        {"window": name, "json_bytes": len(encode_json(w)), "cbor_bytes": len(encode_cbor(w))}
        for name, w in cases.items()
    ]


def _us_per_call(fn: Any, number: int, repeat: int = 5) -> float:
    # Best of `repeat`: the machine is shared, the minimum is the least disturbed figure.
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _device_record(w: MetricsWindow) -> dc.MetricsWindow:
    """The device-codec record holding the same values as a pydantic window."""
    fields = dict(w)
    fields.pop("type")
    fields["model"] = dc.ModelRef(**dict(w.model))
    fields["shadow"] = None if w.shadow is None else dc.ShadowFigures(**dict(w.shadow))
    return dc.MetricsWindow(**fields)


def timings(number: int) -> list[dict[str, Any]]:
    w = realistic_window()
    rec = _device_record(w)
    kw = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec) if f.init}  # what close_record passes
    as_dict = w.model_dump(mode="json")
    js, cb = encode_json(w), encode_cbor(w)
    assert dc.encode(rec) == cb and dc.encode(rec, "json") == js  # same bytes, or the comparison is moot
    plain_js = json.dumps(as_dict).encode()
    arr = cbor2.loads(cb)
    ping = encode(Ping(device_id="pi-zero-0042", cmd_id="c-1", ts=1_795_000_000))
    rows = [
        ("encode", "JSON (pydantic, validated model)", lambda: encode_json(w)),
        ("encode", "CBOR positional (ours)", lambda: encode_cbor(w)),
        ("encode", "device codec: JSON of the record", lambda: dc.encode(rec, "json")),
        ("encode", "device codec: CBOR of the record", lambda: dc.encode(rec)),
        ("encode", "device codec: build record (validation) + CBOR",
         lambda: dc.encode(dc.MetricsWindow(**kw))),
        ("encode", "baseline: json.dumps(dict)", lambda: json.dumps(as_dict).encode()),
        ("encode", "baseline: cbor2.dumps(array)", lambda: cbor2.dumps(arr)),
        ("decode", "JSON -> validated model", lambda: decode_json(js)),
        ("decode", "CBOR -> validated model", lambda: decode_cbor(cb)),
        ("decode", "device codec: CBOR -> validated record", lambda: dc.decode(cb)),
        ("decode", "CBOR Ping command -> model (pydantic, cmd channel)",
         lambda: decode(ping, expected_device_id="pi-zero-0042", expected_channel="cmd")),
        ("decode", "device codec: CBOR Ping -> record (decode_command)",
         lambda: dc.decode_command(ping, device_id="pi-zero-0042")),
        ("decode", "baseline: json.loads (no validation)", lambda: json.loads(plain_js)),
        ("decode", "baseline: cbor2.loads (no validation)", lambda: cbor2.loads(cb)),
    ]
    return [{"op": op, "what": what, "us_per_window": _us_per_call(fn, number)} for op, what, fn in rows]


_RSS_PROBE = r"""
import json, sys
def rss():
    out = {}
    for line in open("/proc/self/status"):
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon"):
            out[key] = int(line.split()[1])
    return out
steps = {"python": rss()}
import numpy
steps["numpy"] = rss()
import telemetry
steps["import telemetry"] = rss()
import pydantic
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
class _Probe(BaseModel):  # the first model pulls in pydantic's schema-building machinery
    model_config = ConfigDict(strict=True)
    a: int = Field(ge=0)
steps["pydantic + one trivial model"] = rss()
import cbor2
steps["cbor2"] = rss()
import telemetry.schemas, telemetry.codec
steps["schemas + codec"] = rss()
from telemetry.schemas import MetricsWindow, ModelRef, Ping
from telemetry.codec import decode, encode
w = MetricsWindow(device_id="pi-1", seq=1, window_start_s=1, window_len_s=60, duty_cycle=0.1, inferences=1,
                  positives=0, false_positives=0, latency_p50_us=1, latency_p95_us=1, latency_max_us=1,
                  model=ModelRef(name="m", version=1, variant="full_int8"), output_hist=[1])
for _ in range(200):
    decode(encode(w))
    decode(encode(Ping(device_id="pi-1", cmd_id="c", ts=1), "json"))
steps["after 200 encode/decode"] = rss()
import telemetry.drift, telemetry.aggregation
steps["drift + aggregation"] = rss()
print(json.dumps(steps))
"""

RSS_STEPS = (
    "python",
    "numpy",
    "import telemetry",
    "pydantic + one trivial model",
    "cbor2",
    "schemas + codec",
    "after 200 encode/decode",
    "drift + aggregation",
)


_PATH_PROBE = r"""
import json, sys
def rss():
    out = {}
    for line in open("/proc/self/status"):
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon"):
            out[key] = int(line.split()[1])
    return out
path, cmd = sys.argv[1], bytes.fromhex(sys.argv[2])
import numpy
steps = {"baseline": rss()}
if path == "device":
    from telemetry import device_codec as dc
    from telemetry.aggregation import WindowAggregator
    model = dc.ModelRef(name="kws-yesno", version=7, variant="full_int8")
    close, enc, dec = "close_record", dc.encode, lambda b: dc.decode_command(b, device_id="pi-1")
else:
    from telemetry import codec, schemas
    from telemetry.aggregation import WindowAggregator
    model = schemas.ModelRef(name="kws-yesno", version=7, variant="full_int8")
    close, enc = "close", codec.encode
    dec = lambda b: codec.decode(b, expected_device_id="pi-1", expected_channel="cmd")
steps["import"] = rss()
agg = WindowAggregator("pi-1", model, input_edges=[i / 10 for i in range(11)], seed=1)
agg.open(1_795_000_000.0)
for i in range(3000):
    agg.record_inference(8000 + i % 977, i % 25 == 0, output_score=(i % 100) / 100,
                         input_value=(i % 37) / 37)
data = enc(getattr(agg, close)(1_795_000_300.0, battery_pct=87.5, battery_mv=3987))
command = dec(cmd)
steps["one window encoded, one command decoded"] = rss()
print(json.dumps({"steps": steps, "pydantic_loaded": "pydantic" in sys.modules, "window_hex": data.hex()}))
"""

PATHS = ("device", "pydantic")


def _median_added(rows: list[dict[str, Any]], step: str, key: str) -> float:
    """Median over runs of (value after ``step`` - the same run's Python + numpy baseline)."""
    return statistics.median(r["steps"][step][key] - r["steps"]["baseline"][key] for r in rows)


def probe_env(cache_dir: Path) -> dict[str, str]:
    """Environment for the RSS probes: bytecode cached under ``cache_dir``.

    This checkout runs with PYTHONDONTWRITEBYTECODE=1, so our own modules would be compiled from source
    in every probe (site-packages and the stdlib ship .pyc files); compiling costs ~0.3 MB RSS per
    module, which an installed agent never pays. A warm-up run fills the cache first.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    return env


def _run_probe(code: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(proc.stdout)


def rss_paths(runs: int, env: dict[str, str]) -> dict[str, Any]:
    """Device path vs pydantic path: KiB added over Python + numpy, medians of alternating fresh runs."""
    cmd = encode(Ping(device_id="pi-1", cmd_id="c-1", ts=1_795_000_000)).hex()
    samples: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    for path in PATHS:
        _run_probe(_PATH_PROBE, env, path, cmd)  # warm-up: fills the bytecode cache
    for _ in range(runs):
        for path in PATHS:  # alternate, so that machine load drifts hit both paths alike
            samples[path].append(_run_probe(_PATH_PROBE, env, path, cmd))
    windows = {p: {s["window_hex"] for s in samples[p]} for p in PATHS}
    out: dict[str, Any] = {"runs": runs, "same_window_bytes": windows["device"] == windows["pydantic"]}
    for path in PATHS:
        rows = samples[path]
        out[path] = {
            "pydantic_loaded": any(r["pydantic_loaded"] for r in rows),
            "baseline_vmrss_kb": statistics.median(r["steps"]["baseline"]["VmRSS"] for r in rows),
            "steps": [
                {
                    "step": step,
                    "added_vmrss_kb": _median_added(rows, step, "VmRSS"),
                    "added_rssanon_kb": _median_added(rows, step, "RssAnon"),
                }
                for step in ("import", "one window encoded, one command decoded")
            ],
        }
    out["saved_vmrss_kb"] = out["pydantic"]["steps"][-1]["added_vmrss_kb"] - out["device"]["steps"][-1][
        "added_vmrss_kb"
    ]
    return out


def rss(runs: int, env: dict[str, str]) -> dict[str, Any]:
    """Median VmRSS / RssAnon (KiB) after each step in fresh interpreters; deltas vs the step before."""
    _run_probe(_RSS_PROBE, env)  # warm-up: fills the bytecode cache
    samples = [_run_probe(_RSS_PROBE, env) for _ in range(runs)]
    rows = []
    prev: dict[str, float] | None = None
    for step in RSS_STEPS:
        cur = {k: statistics.median(s[step][k] for s in samples) for k in ("VmRSS", "RssAnon")}
        rows.append(
            {
                "step": step,
                "vmrss_kb": cur["VmRSS"],
                "rssanon_kb": cur["RssAnon"],
                "added_vmrss_kb": None if prev is None else cur["VmRSS"] - prev["VmRSS"],
                "added_rssanon_kb": None if prev is None else cur["RssAnon"] - prev["RssAnon"],
            }
        )
        prev = cur
    by = {r["step"]: r for r in rows}
    return {
        "runs": runs,
        "steps": rows,
        "telemetry_total_over_numpy_kb": by["drift + aggregation"]["vmrss_kb"] - by["numpy"]["vmrss_kb"],
    }


def render(results: dict[str, Any], console: Console) -> None:
    t = Table(title="Bytes per metrics window")
    for col in ("window", "JSON B", "CBOR B", "CBOR/JSON"):
        t.add_column(col, justify="left" if col == "window" else "right")
    for r in results["sizes"]:
        t.add_row(
            r["window"],
            str(r["json_bytes"]),
            str(r["cbor_bytes"]),
            f"{r['cbor_bytes'] / r['json_bytes']:.2f}",
        )
    console.print(t)
    t = Table(title=f"Time per window (best of 5 x {results['number']} calls)")
    for col in ("op", "what", "µs/window"):
        t.add_column(col, justify="right" if col == "µs/window" else "left")
    for r in results["timings"]:
        t.add_row(r["op"], r["what"], f"{r['us_per_window']:.1f}")
    console.print(t)
    t = Table(title=f"RSS (median of {results['rss']['runs']} fresh interpreters)")
    for col in ("after step", "VmRSS KiB", "added", "RssAnon KiB", "added anon"):
        t.add_column(col, justify="left" if col == "after step" else "right")
    for r in results["rss"]["steps"]:
        t.add_row(
            r["step"], *(_kb(r[k]) for k in ("vmrss_kb", "added_vmrss_kb", "rssanon_kb", "added_rssanon_kb"))
        )
    console.print(t)
    p = results["rss_paths"]
    t = Table(title=f"Device path vs pydantic path: added over Python + numpy (median of {p['runs']} runs)")
    for col in ("path", "step", "added VmRSS KiB", "added RssAnon KiB", "pydantic imported"):
        t.add_column(col, justify="left" if col in ("path", "step") else "right")
    for path in PATHS:
        for r in p[path]["steps"]:
            t.add_row(path, r["step"], _kb(r["added_vmrss_kb"]), _kb(r["added_rssanon_kb"]),
                      str(p[path]["pydantic_loaded"]))
    console.print(t)
    console.print(f"device path saves {p['saved_vmrss_kb'] / 1024:.1f} MB VmRSS; "
                  f"same window bytes on both paths: {p['same_window_bytes']}")


def _kb(v: float | None) -> str:
    return "" if v is None else f"{v:.0f}"


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [
        "# Telemetry benchmark results",
        "",
        f"- Date: {results['date']}",
        f"- Command: `{command}`",
        f"- Machine: {results['machine']} (2 cores shared with other jobs; timings are best-of-5)",
        "",
        "## Bytes per metrics window",
        "",
        "| window | JSON bytes | CBOR bytes | CBOR/JSON |",
        "|:--|--:|--:|--:|",
    ]
    for r in results["sizes"]:
        ratio = r["cbor_bytes"] / r["json_bytes"]
        lines.append(f"| {r['window']} | {r['json_bytes']} | {r['cbor_bytes']} | {ratio:.2f} |")
    lines += [
        "",
        f"## Encode / decode time per window (best of 5 x {results['number']} calls)",
        "",
        "| op | what | µs/window |",
        "|:--|:--|--:|",
    ]
    lines += [f"| {r['op']} | {r['what']} | {r['us_per_window']:.1f} |" for r in results["timings"]]
    r = results["rss"]
    lines += [
        "",
        f"## RSS after each import step (median of {r['runs']} fresh interpreters, KiB)",
        "",
        "Bytecode cached (a warm-up run writes .pyc files to a temporary PYTHONPYCACHEPREFIX), as for an "
        "installed agent; this checkout sets PYTHONDONTWRITEBYTECODE=1, which would otherwise add the cost "
        "of compiling every telemetry module (~0.3 MB each) to these figures.",
        "",
        "| after step | VmRSS | added | RssAnon | added anon |",
        "|:--|--:|--:|--:|--:|",
    ]
    for row in r["steps"]:
        cells = (_kb(row[k]) for k in ("vmrss_kb", "added_vmrss_kb", "rssanon_kb", "added_rssanon_kb"))
        lines.append(f"| {row['step']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Telemetry total over Python + numpy: {r['telemetry_total_over_numpy_kb']:.0f} KiB VmRSS.",
        "",
    ]
    p = results["rss_paths"]
    lines += [
        f"## Device path vs pydantic path (median of {p['runs']} alternating fresh interpreters)",
        "",
        "Both columns are added over the same baseline, Python + numpy, measured in each interpreter "
        f"(median baseline: {p['device']['baseline_vmrss_kb']:.0f} KiB device runs, "
        f"{p['pydantic']['baseline_vmrss_kb']:.0f} KiB pydantic runs). Device path: "
        "`telemetry.device_codec` + `telemetry.aggregation`, a 3000-inference window closed with "
        "`close_record()` and encoded, one CBOR Ping decoded with `decode_command()`. Pydantic path: the "
        "same with `telemetry.schemas` + `telemetry.codec`, `close()`, `codec.encode`, `codec.decode`.",
        "",
        "| path | step | added VmRSS KiB | added RssAnon KiB | pydantic imported |",
        "|:--|:--|--:|--:|:--|",
    ]
    for path in PATHS:
        for row in p[path]["steps"]:
            lines.append(
                f"| {path} | {row['step']} | {row['added_vmrss_kb']:.0f} | {row['added_rssanon_kb']:.0f} | "
                f"{'yes' if p[path]['pydantic_loaded'] else 'no'} |"
            )
    lines += [
        "",
        f"The device path saves {p['saved_vmrss_kb']:.0f} KiB ({p['saved_vmrss_kb'] / 1024:.1f} MB) VmRSS; "
        f"both paths produced the same window bytes: {'yes' if p['same_window_bytes'] else 'NO'}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print figures as JSON")
    ap.add_argument("--number", type=int, default=2000, help="calls per timing repeat")
    ap.add_argument("--rss-runs", type=int, default=5)
    ap.add_argument("--write-results", type=Path, help="write a Markdown summary to this file")
    args = ap.parse_args()
    console = Console(stderr=args.json)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "number": args.number,
    }
    with Progress(console=console, transient=True) as progress, tempfile.TemporaryDirectory() as cache:
        env = probe_env(Path(cache))
        task = progress.add_task("sizes", total=4)
        results["sizes"] = sizes()
        progress.update(task, advance=1, description="encode/decode timings")
        results["timings"] = timings(args.number)
        progress.update(task, advance=1, description="RSS of imports")
        results["rss"] = rss(args.rss_runs, env)
        progress.update(task, advance=1, description="RSS: device path vs pydantic path")
        results["rss_paths"] = rss_paths(args.rss_runs, env)
        progress.update(task, advance=1)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        render(results, console)
    if args.write_results:
        command = "python " + " ".join([str(Path(sys.argv[0]).as_posix()), *sys.argv[1:]])
        args.write_results.write_text(markdown(results, command))
        console.print(f"wrote {args.write_results}")


if __name__ == "__main__":
    main()
