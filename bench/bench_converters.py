"""Benchmark of the conversion pipeline on the reference chains (KWS and digits).

Per variant of every reference model: conversion time, bytes, accuracy, measured TFLM arena and
LiteRT steady latency, each next to its baseline measured in the same run:
  * bytes      vs the float32 .tflite        (target: full_int8 <= 0.30 x float32)
  * accuracy   vs the float Keras model      (target: full_int8 within 1.0 pp)
  * latency    vs Keras `model(x)` on the same sample (eager call, one sample)
and the wall time to convert + validate each whole chain (target <= 60 s), training reported apart.
The bytes target is stated per model, for each task's primary (deployable) model, and for the whole
chain (sum of full_int8 bytes / sum of float32 bytes). A converter-side lever is measured but not used
by the pipeline: per-tensor instead of per-channel weight quantization (`_experimental_disable_per_channel`).

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/bench_converters.py [--tasks kws digits] [--json-out PATH]

Output: a Rich table on stdout and a JSON file (default out/bench/converters.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as the Makefile: oneDNN changes the trained weights

INT8_BYTES_TARGET = 0.30
ACCURACY_TARGET_PP = 1.0
CHAIN_SECONDS_TARGET = 60.0
KERAS_RUNS = 100


def _weight_bytes(model_bytes: bytes) -> int:
    """Bytes of constant buffers (weights, biases, quantization-free constants) in a .tflite."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    return int(sum(len(b.data) for b in model.buffers or [] if b.data is not None))


def _per_tensor_int8(model: Any, calibration: np.ndarray) -> bytes:
    """Full-int8 as the pipeline builds it, but one weight scale per tensor instead of per channel.

    Measured only (bytes and accuracy cost); the pipeline keeps the converter's per-channel default.
    """
    import contextlib
    import io
    import warnings

    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calibration[i : i + 1]] for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel = True  # experimental TF converter flag
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(converter.convert())


def _litert_accuracy(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from converters.validation import LiteRtRunner

    _raw, probs = LiteRtRunner(model_bytes).run(x)
    return float(np.mean(np.argmax(probs, axis=1) == y))


def _keras_latency_us(model: Any, sample: np.ndarray) -> float:
    """Median of KERAS_RUNS eager calls `model(x)` on one sample, after 10 warm-up calls."""
    x = sample[np.newaxis]
    for _ in range(10):
        model(x, training=False)
    timings = []
    for _ in range(KERAS_RUNS):
        start = time.perf_counter_ns()
        model(x, training=False)
        timings.append((time.perf_counter_ns() - start) / 1000.0)
    return statistics.median(timings)


def bench_task(task: str, work: Path, log: Any) -> dict[str, Any]:
    import keras

    from converters.reference.chain import build_reference_chain, load_task
    from converters.report import ConversionReport
    from converters.tflite_variants import build_variant

    started = time.perf_counter()
    chain = build_reference_chain(task, work / task, progress=lambda d, f: print(f"  {f:5.0%} {d}", file=log))  # type: ignore[arg-type]
    wall = time.perf_counter() - started
    data = load_task(task)
    rows: list[dict[str, Any]] = []
    levers: list[dict[str, Any]] = []
    for entry in chain.entries:
        directory = work / task / entry.artifact_dir
        report = ConversionReport.read(directory)
        model = keras.saving.load_model(directory / "model.keras")
        keras_us = _keras_latency_us(model, data.x_eval[0])
        float32_bytes = report.variants["float32"].bytes
        float32_weights = _weight_bytes((directory / "float32.tflite").read_bytes())
        per_tensor = _per_tensor_int8(model, data.x_cal)
        per_tensor_acc = _litert_accuracy(per_tensor, data.x_eval, data.y_eval)
        levers.append(
            {
                "model": entry.name,
                "rank": entry.rank,
                "parameters": entry.parameters,
                "per_channel_bytes": entry.full_int8_bytes,
                "per_channel_ratio": round(entry.full_int8_bytes / float32_bytes, 4),
                "per_channel_delta_pp": entry.full_int8_delta_pp,
                "per_tensor_bytes": len(per_tensor),
                "per_tensor_ratio": round(len(per_tensor) / float32_bytes, 4),
                "per_tensor_delta_pp": round(100 * (per_tensor_acc - report.model.float_accuracy), 2),
            }
        )
        for name, v in report.variants.items():
            t0 = time.perf_counter()
            build_variant(model, name, data.x_cal)  # type: ignore[arg-type]
            convert_s = time.perf_counter() - t0
            tflite = (directory / v.file).read_bytes()
            rows.append(
                {
                    "task": task,
                    "model": entry.name,
                    "rank": entry.rank,
                    "variant": name,
                    "convert_seconds": round(convert_s, 3),
                    "bytes": v.bytes,
                    "float32_bytes": float32_bytes,
                    "bytes_ratio": round(v.bytes / float32_bytes, 4),
                    "weight_bytes": _weight_bytes(tflite),
                    "float32_weight_bytes": float32_weights,
                    "weight_bytes_ratio": round(_weight_bytes(tflite) / float32_weights, 4),
                    "accuracy": v.accuracy,
                    "float_keras_accuracy": report.model.float_accuracy,
                    "delta_pp": v.accuracy_delta_pp,
                    "status": v.status,
                    "tflm_arena_bytes": report.tflm.arena_bytes if name == "full_int8" else None,
                    "litert_steady_us": v.latency_steady_us,
                    "keras_call_us": round(keras_us, 1),
                }
            )
    m = chain.measurements
    return {
        "task": task,
        "chain_wall_seconds": round(wall, 3),
        "train_seconds": m.train_seconds,
        "convert_validate_seconds": round(wall - m.train_seconds, 3),
        "convert_model_seconds": m.convert_seconds,
        "order": [e.name for e in chain.entries],
        "primary": chain.entries[0].name,
        "primary_int8_ratio": round(chain.entries[0].full_int8_bytes / chain.entries[0].float32_bytes, 4),
        "chain_int8_bytes": sum(e.full_int8_bytes for e in chain.entries),
        "chain_float32_bytes": sum(e.float32_bytes for e in chain.entries),
        "chain_int8_ratio": round(
            sum(e.full_int8_bytes for e in chain.entries) / sum(e.float32_bytes for e in chain.entries), 4
        ),
        "train_seconds_per_model": {e.name: e.measurements.train_seconds for e in chain.entries},
        "per_tensor_lever": levers,
        "streams": {e.name: {k: v.model_dump() for k, v in e.streams.items()} for e in chain.entries},
        "calibration": {e.name: e.calibration.model_dump() for e in chain.entries if e.calibration},
        "streams_at_task_threshold": _task_threshold_baseline(chain, work / task),
        "rows": rows,
    }


def _task_threshold_baseline(chain, directory: Path) -> dict[str, dict[str, dict[str, float]]]:  # type: ignore[no-untyped-def]
    """Baseline in the same run: the same .tflite files on the same streams at the task-wide threshold."""
    from converters.reference.chain import KWS_STRIDE_FRAMES, STREAM_LABELS
    from converters.reference.datasets import load_kws_stream
    from converters.reference.stream_eval import evaluate_stream

    if chain.task != "kws":
        return {}
    streams = {label: load_kws_stream(label) for label in STREAM_LABELS}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for e in chain.entries:
        out[e.name] = {}
        for label, stream in streams.items():
            m = evaluate_stream(
                directory / e.artifact_dir / "full_int8.tflite",
                stream,
                chain.metadata.positive_class_ids,
                threshold=chain.metadata.score_threshold,
                suppression_s=chain.metadata.suppression_s or 1.0,
                stride_frames=KWS_STRIDE_FRAMES,
            )
            out[e.name][label] = {
                "threshold": m.threshold,
                "false_activations_per_hour": m.false_activations_per_hour,
                "false_rejection_rate": m.false_rejection_rate,
            }
    return out


def _ratio_cell(ratio: float) -> str:
    return f"[{'green' if ratio <= INT8_BYTES_TARGET else 'red'}]{ratio:.3f}[/]"


def render(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="converters benchmark: every variant next to its same-run baseline")
    heads = (
        "task",
        "model",
        "variant",
        "conv s",
        "bytes",
        "÷ fp32 B",
        "weights ÷ fp32",
        "accuracy",
        "float Keras",
        "Δ pp",
        "TFLM arena",
        "LiteRT µs",
        "Keras µs",
    )
    for h in heads:
        table.add_column(h, justify="left" if h in ("task", "model", "variant") else "right")
    for res in results:
        for r in res["rows"]:
            int8 = r["variant"] == "full_int8"
            ratio = f"{r['bytes_ratio']:.2f}"
            if int8:
                ok = r["bytes_ratio"] <= INT8_BYTES_TARGET
                ratio = f"[{'green' if ok else 'red'}]{ratio}[/]"
            delta = f"{r['delta_pp']:+.2f}"
            if int8:
                delta = f"[{'green' if r['delta_pp'] >= -ACCURACY_TARGET_PP else 'red'}]{delta}[/]"
            table.add_row(
                r["task"],
                r["model"],
                r["variant"],
                f"{r['convert_seconds']:.2f}",
                f"{r['bytes']:,}",
                ratio,
                f"{r['weight_bytes_ratio']:.2f}",
                f"{100 * r['accuracy']:.1f} %",
                f"{100 * r['float_keras_accuracy']:.1f} %",
                delta,
                f"{r['tflm_arena_bytes']:,}" if r["tflm_arena_bytes"] else "",
                f"{r['litert_steady_us']:.1f}",
                f"{r['keras_call_us']:.0f}",
            )
        table.add_section()
    console.print(table)
    chains = Table(
        title=f"whole-chain wall time (target: convert + validate <= {CHAIN_SECONDS_TARGET:.0f} s)"
    )
    for h in ("task", "order (primary first)", "train s", "convert + validate s", "total s"):
        chains.add_column(h, justify="left" if h in ("task", "order (primary first)") else "right")
    for res in results:
        ok = res["convert_validate_seconds"] <= CHAIN_SECONDS_TARGET
        chains.add_row(
            res["task"],
            " → ".join(res["order"]),
            f"{res['train_seconds']:.1f}",
            f"[{'green' if ok else 'red'}]{res['convert_validate_seconds']:.1f}[/]",
            f"{res['chain_wall_seconds']:.1f}",
        )
    console.print(chains)
    sizes = Table(title=f"full_int8 bytes ÷ float32 bytes (target <= {INT8_BYTES_TARGET:.2f})")
    for h in ("task", "model", "params", "per-channel (used)", "Δ pp", "per-tensor (measured only)", "Δ pp"):
        sizes.add_column(h, justify="left" if h in ("task", "model") else "right")
    for res in results:
        for lv in res["per_tensor_lever"]:
            primary = " (primary)" if lv["rank"] == 0 else ""
            sizes.add_row(
                res["task"],
                lv["model"] + primary,
                f"{lv['parameters']:,}",
                _ratio_cell(lv["per_channel_ratio"]),
                f"{lv['per_channel_delta_pp']:+.2f}",
                _ratio_cell(lv["per_tensor_ratio"]),
                f"{lv['per_tensor_delta_pp']:+.2f}",
            )
        sizes.add_row(
            res["task"],
            "whole chain (Σ int8 / Σ fp32)",
            "",
            _ratio_cell(res["chain_int8_ratio"]),
            "",
            "",
            "",
        )
        sizes.add_section()
    console.print(sizes)
    calib = Table(title="KWS per-model threshold calibration (calibration stream, full_int8 on LiteRT)")
    for h in ("model", "stream", "s", "target FA/h", "threshold", "FA/h", "FRR", "meets target"):
        calib.add_column(h, justify="left" if h in ("model", "stream") else "right")
    for res in results:
        for model, c in res.get("calibration", {}).items():
            calib.add_row(
                model,
                c["stream"],
                f"{c['duration_s']:.0f}",
                f"{c['target_false_activations_per_hour']:g}",
                f"{c['threshold']:g}",
                f"{c['false_activations_per_hour']:.0f}",
                f"{100 * c['false_rejection_rate']:.1f} %",
                "yes" if c["meets_target"] else f"[red]no[/] ({c['flag']})",
            )
    if calib.row_count:
        console.print(calib)
    streams = Table(
        title="KWS held-out streams (full_int8 on LiteRT): calibrated threshold vs task-wide baseline"
    )
    for h in ("model", "stream", "noise dBFS", "keywords", "thr", "FA/h", "FRR", "base thr", "base FA/h",
              "base FRR"):  # fmt: skip
        streams.add_column(h, justify="left" if h in ("model", "stream") else "right")
    for res in results:
        for model, per_stream in res["streams"].items():
            for label, m in per_stream.items():
                b = res.get("streams_at_task_threshold", {}).get(model, {}).get(label)
                streams.add_row(
                    model,
                    label,
                    f"{m['noise_dbfs']:.0f}",
                    str(m["keyword_events"]),
                    f"{m['threshold']:g}",
                    f"{m['false_activations_per_hour']:.0f}",
                    f"{100 * m['false_rejection_rate']:.1f} %",
                    f"{b['threshold']:g}" if b else "",
                    f"{b['false_activations_per_hour']:.0f}" if b else "",
                    f"{100 * b['false_rejection_rate']:.1f} %" if b else "",
                )
    if streams.row_count:
        console.print(streams)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["kws", "digits"], choices=["kws", "digits"])
    parser.add_argument("--json-out", type=Path, default=Path("out/bench/converters.json"))
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-converters-") as tmp:
        for task in args.tasks:
            print(f"building the {task} chain ...", file=sys.stderr)
            results.append(bench_task(task, Path(tmp), sys.stderr))
    payload = {
        "benchmark": "converters",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "machine": platform.machine(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "targets": {
            "full_int8_bytes_ratio_max": INT8_BYTES_TARGET,
            "full_int8_delta_pp_min": -ACCURACY_TARGET_PP,
            "chain_convert_validate_seconds_max": CHAIN_SECONDS_TARGET,
        },
        "results": results,
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(payload, indent=2) + "\n")
    render(results)
    print(f"JSON: {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
