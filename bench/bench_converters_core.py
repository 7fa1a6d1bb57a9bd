"""Conversion pipeline benchmark: six small models end to end, and the TFLM arena search vs a naive one.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/bench_converters_core.py [--json]

Figures printed next to baselines measured in the same run:
* per model: total convert_model time next to the bare TFLite converter time for the same variants
  (what validation, TFLM probing, baselines and packaging add);
* arena search: the forked-probe worker (what the pipeline uses) next to one fresh Python process per
  probe (the obvious safe alternative), over the same number of probes.
Target from the design brief: all six conversions well under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from rich.console import Console
from rich.table import Table


def _models() -> dict[str, tuple[object, tuple[int, ...], int]]:
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)

    def seq(shape: tuple[int, ...], *hidden: object, classes: int = 10) -> object:
        return keras.Sequential([keras.Input(shape), *hidden, layers.Dense(classes, activation="softmax")])

    return {
        "digits_cnn": (
            seq((8, 8, 1), layers.Conv2D(8, 3, activation="relu"), layers.Flatten()),
            (8, 8, 1),
            10,
        ),
        "digits_mlp": (seq((64,), layers.Dense(32, activation="relu")), (64,), 10),
        "digits_dscnn": (
            seq(
                (8, 8, 1),
                layers.Conv2D(8, 3, padding="same", activation="relu"),
                layers.DepthwiseConv2D(3, padding="same", activation="relu"),
                layers.Conv2D(16, 1, activation="relu"),
                layers.GlobalAveragePooling2D(),
            ),
            (8, 8, 1),
            10,
        ),
        "kws_tiny_cnn": (
            seq(
                (49, 10, 1),
                layers.Conv2D(8, (10, 4), strides=2, activation="relu"),
                layers.Flatten(),
                classes=4,
            ),
            (49, 10, 1),
            4,
        ),
        "kws_mel40_cnn": (
            seq(
                (49, 40, 1),
                layers.Conv2D(16, 3, strides=2, activation="relu"),
                layers.MaxPooling2D(),
                layers.Conv2D(16, 3, activation="relu"),
                layers.GlobalAveragePooling2D(),
                classes=4,
            ),
            (49, 40, 1),
            4,
        ),
        "vector_mlp": (
            seq((32,), layers.Dense(64, activation="relu"), layers.Dense(32, activation="relu"), classes=3),
            (32,),
            3,
        ),
    }


def _naive_probe_seconds(model_path: Path, arena: int, runs: int) -> float:
    code = (
        "import sys, numpy as np\n"
        "from tflite_micro.python.tflite_micro import runtime\n"
        "it = runtime.Interpreter.from_bytes(open(sys.argv[1], 'rb').read(), arena_size=int(sys.argv[2]))\n"
        "d = it.get_input_details(0)\n"
        "it.set_input(np.zeros(tuple(d['shape']), d['dtype']), 0); it.invoke()\n"
    )
    start = time.perf_counter()
    for _ in range(runs):
        subprocess.run(
            [sys.executable, "-c", code, str(model_path), str(arena)], check=True, capture_output=True
        )
    return (time.perf_counter() - start) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    console = Console(stderr=args.json, width=None if sys.stdout.isatty() else 150)

    from converters.config import ALL_VARIANTS
    from converters.pipeline import convert_model
    from converters.tflite_variants import build_variant
    from converters.tflm_probe import TflmProbe

    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wall = time.perf_counter()
        for name, (model, shape, classes) in _models().items():
            calibration = rng.random((100, *shape), dtype=np.float32)
            x_eval = rng.random((300, *shape), dtype=np.float32)
            y_eval = rng.integers(0, classes, 300)
            start = time.perf_counter()
            report = convert_model(
                model, calibration, x_eval, y_eval, name=name, version="1", out_dir=Path(tmp) / name
            )
            total = time.perf_counter() - start
            start = time.perf_counter()
            for variant in ALL_VARIANTS:
                build_variant(model, variant, calibration)
            bare = time.perf_counter() - start
            rows.append(
                {
                    "model": name,
                    "convert_model_s": round(total, 3),
                    "bare_converter_s": round(bare, 3),
                    "tflm_stage_s": report.measurements.stage_seconds.get("tflm"),
                    "arena_bytes": report.tflm.arena_bytes,
                    "full_int8_bytes": report.variants["full_int8"].bytes,
                    "steady_us": report.variants["full_int8"].latency_steady_us,
                }
            )
        all_six = time.perf_counter() - wall - sum(r["bare_converter_s"] for r in rows)

        # Arena search: forked probes vs a fresh interpreter process per probe, same model, same probe count.
        model_path = Path(tmp) / "kws_mel40_cnn" / "full_int8.tflite"
        model_bytes = model_path.read_bytes()
        with TflmProbe() as probe:
            start = time.perf_counter()
            measured = probe.minimum_arena(model_bytes)
            forked_total = time.perf_counter() - start
        assert measured is not None
        naive_each = _naive_probe_seconds(model_path, measured.arena_bytes, runs=3)
    arena_row = {
        "probes": measured.probes,
        "forked_search_s": round(forked_total, 3),
        "forked_per_probe_ms": round(1000 * forked_total / measured.probes, 1),
        "fresh_process_per_probe_ms": round(1000 * naive_each, 1),
        "fresh_process_search_estimate_s": round(naive_each * measured.probes, 3),
    }
    result = {"models": rows, "all_six_convert_model_s": round(all_six, 3), "arena_search": arena_row}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    table = Table(
        title="convert_model, six small models (random weights, 100 calibration / 300 eval samples)"
    )
    for column in rows[0]:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    console.print(
        f"all six convert_model calls: {all_six:.1f} s (target: well under 60 s); "
        f"median bare converter {statistics.median(r['bare_converter_s'] for r in rows):.2f} s per model"
    )
    console.print(
        f"arena search on kws_mel40_cnn: {arena_row['probes']} probes, "
        f"forked worker {arena_row['forked_search_s']} s ({arena_row['forked_per_probe_ms']} ms/probe) "
        f"vs fresh process per probe {arena_row['fresh_process_per_probe_ms']} ms/probe "
        f"→ {arena_row['fresh_process_search_estimate_s']} s"
    )


if __name__ == "__main__":
    main()
