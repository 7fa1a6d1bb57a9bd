"""Telemetry codec benchmark: bytes per window, encode/decode time, RSS added by importing the package.

    .venv/bin/python bench/bench_telemetry.py            # Rich tables
    .venv/bin/python bench/bench_telemetry.py --json     # machine-readable figures
    .venv/bin/python bench/bench_telemetry.py --write-results bench/RESULTS-telemetry.md

Every timing is printed next to a baseline measured in the same run: ``json.dumps``/``json.loads`` of the
equivalent plain dict (what a hand-rolled agent would do without schemas), and raw ``cbor2`` of the same
positional array (the floor for our binary form).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import subprocess
import sys
import timeit
from pathlib import Path
from typing import Any

import cbor2
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from telemetry.codec import decode_cbor, decode_json, encode_cbor, encode_json
from telemetry.schemas import U16_MAX, U32_MAX, MetricsWindow, ModelRef, ShadowFigures

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


def timings(number: int) -> list[dict[str, Any]]:
    w = realistic_window()
    as_dict = w.model_dump(mode="json")
    js, cb = encode_json(w), encode_cbor(w)
    plain_js = json.dumps(as_dict).encode()
    arr = cbor2.loads(cb)
    rows = [
        ("encode", "JSON (pydantic, validated model)", lambda: encode_json(w)),
        ("encode", "CBOR positional (ours)", lambda: encode_cbor(w)),
        ("encode", "baseline: json.dumps(dict)", lambda: json.dumps(as_dict).encode()),
        ("encode", "baseline: cbor2.dumps(array)", lambda: cbor2.dumps(arr)),
        ("decode", "JSON -> validated model", lambda: decode_json(js)),
        ("decode", "CBOR -> validated model", lambda: decode_cbor(cb)),
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


def rss(runs: int) -> dict[str, Any]:
    """Median VmRSS / RssAnon (KiB) after each step in fresh interpreters; deltas vs the step before."""
    samples = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", _RSS_PROBE], capture_output=True, text=True, check=True)
        samples.append(json.loads(proc.stdout))
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
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("sizes", total=3)
        results["sizes"] = sizes()
        progress.update(task, advance=1, description="encode/decode timings")
        results["timings"] = timings(args.number)
        progress.update(task, advance=1, description="RSS of imports")
        results["rss"] = rss(args.rss_runs)
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
