"""OTA benchmark: delta sizes for a fine-tuned head vs a full retrain, and sign/verify cost.

Builds a small CNN on sklearn digits with Keras, derives (a) a fine-tuned model (all layers frozen
but the last Dense, one more epoch) and (b) a full retrain (new seed), converts each to .tflite
(float32 and full int8) with the real TFLiteConverter, then compares on the same pairs:

* bsdiff4 (what TinyFleet ships) next to ``zstd --patch-from`` and ``xdelta3 -e -s``;
* the ship decision of ``DeltaPolicy`` (delta vs zlib-compressed full artifact);
* per-operation medians of manifest signing, full device-side manifest verification, one raw
  Ed25519 verify, and bsdiff4 diff/patch, next to sha256 of the same artifact as a baseline.

Run:  TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python bench/bench_ota.py [--json out.json] [--markdown]
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ota import keys
from ota.canonical import canonical_bytes, parse_document
from ota.delta import DeltaPolicy, apply_patch, compressed_size, make_patch
from ota.release import PreviousArtifact, ReleaseSigner, build_release
from ota.trust import DeviceTrust, verify_manifest

console = Console(stderr=True)
app = typer.Typer(add_completion=False)


# --- models ---------------------------------------------------------------------------------------------


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32").reshape(-1, 8, 8, 1), y.astype("int64")


def _cnn(seed: int, stable_names: bool = True) -> Any:
    """The architecture. ``stable_names`` gives every layer an explicit name, as a model re-loaded from
    its saved file has; without it Keras numbers layers per process (conv2d_3, dense_2_1, ...) and
    those names end up as tensor names in the .tflite file (see bench/RESULTS-ota.md)."""
    import keras

    keras.utils.set_random_seed(seed)

    def n(name: str) -> dict[str, str]:
        return {"name": name} if stable_names else {}

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), **n("pixels")),
            keras.layers.Conv2D(16, 3, activation="relu", **n("conv1")),
            keras.layers.Conv2D(32, 3, activation="relu", **n("conv2")),
            keras.layers.Flatten(**n("flatten")),
            keras.layers.Dense(64, activation="relu", **n("fc1")),
            keras.layers.Dense(10, **n("head")),
        ],
        **n("digits_cnn"),
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def build_models(epochs: int, stable_names: bool = True) -> dict[str, Any]:
    """base (seed 0), fine-tuned head (base + 1 epoch, only the last Dense trainable), retrain (seed 1)."""
    import keras

    x, y = _digits()
    base = _cnn(seed=0, stable_names=stable_names)
    base.fit(x, y, epochs=epochs, batch_size=32, verbose=0)

    finetuned = _cnn(seed=0, stable_names=stable_names)
    finetuned.set_weights(base.get_weights())
    for layer in finetuned.layers[:-1]:
        layer.trainable = False
    finetuned.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rng = np.random.default_rng(7)  # "new field data": the same digits with sensor noise
    x_ft = np.clip(x + rng.normal(0, 0.05, x.shape).astype("float32"), 0, 1)
    finetuned.fit(x_ft, y, epochs=1, batch_size=32, verbose=0)

    retrain = _cnn(seed=1, stable_names=stable_names)
    retrain.fit(x, y, epochs=epochs, batch_size=32, verbose=0)

    changed = [
        i
        for i, (a, b) in enumerate(zip(base.get_weights(), finetuned.get_weights(), strict=True))
        if not np.array_equal(a, b)
    ]
    n_weights = len(base.get_weights())
    assert changed == [n_weights - 2, n_weights - 1], f"fine-tune changed weight arrays {changed}"
    return {"base": base, "finetuned": finetuned, "retrain": retrain}


def to_tflite(model: Any, variant: str) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    quiet = io.StringIO()  # the Keras exporter prints a signature listing to stdout
    if variant == "full_int8":
        x, _ = _digits()
        calib = x[:200]  # same calibration set, same order, for every model
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(quiet):
        return bytes(converter.convert())


def _quant(tensor: Any) -> tuple[Any, ...]:
    q = tensor.quantization
    if q is None or q.scale is None:
        return ()
    return (tuple(np.asarray(q.scale).tolist()), tuple(np.asarray(q.zeroPoint).tolist()))


def changed_tensors(old: bytes, new: bytes) -> str:
    """Which tensors differ (data buffer or quantization parameters) between two .tflite files."""
    from tensorflow.lite.python import schema_py_generated as schema

    a = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(old, 0))
    b = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(new, 0))
    ta_all, tb_all = a.subgraphs[0].tensors, b.subgraphs[0].tensors
    if len(ta_all) != len(tb_all):
        return "graph differs"
    out = []
    for ta, tb in zip(ta_all, tb_all, strict=True):
        da, db = a.buffers[ta.buffer].data, b.buffers[tb.buffer].data
        what = []
        if da is not None and (db is None or not np.array_equal(da, db)):
            what.append("data")
        if _quant(ta) != _quant(tb):
            what.append("scale")
        if what:
            name = "/".join(ta.name.decode().split(";")[0].split("/")[-2:])
            out.append(f"{name}:{'+'.join(what)}")
    return f"{len(out)}/{len(ta_all)}: " + ", ".join(out)


# --- delta tools ----------------------------------------------------------------------------------------


def _tool_delta(cmd: list[str], old: bytes, new: bytes) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "old").write_bytes(old)
        (d / "new").write_bytes(new)
        subprocess.run(cmd, cwd=d, check=True, capture_output=True, timeout=300)
        return (d / "patch").stat().st_size


def zstd_delta(old: bytes, new: bytes) -> int:
    return _tool_delta(["zstd", "-q", "-f", "-19", "--patch-from=old", "new", "-o", "patch"], old, new)


def xdelta3_delta(old: bytes, new: bytes) -> int:
    return _tool_delta(["xdelta3", "-e", "-9", "-f", "-s", "old", "new", "patch"], old, new)


def patch_anatomy(old: bytes, new: bytes) -> dict[str, int]:
    """Where a bsdiff4 patch's bytes go, and what the same diff block costs under other entropy coders."""
    import bz2
    import lzma

    from ota.delta import read_patch_header

    patch = make_patch(old, new)
    h = read_patch_header(patch)
    a, b = 32 + h.control_length, 32 + h.control_length + h.diff_length
    diff = bz2.decompress(patch[a:b])
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "d").write_bytes(diff)
        cmd = ["zstd", "-19", "-c", "d"]
        out = subprocess.run(cmd, cwd=tmp, capture_output=True, check=True, timeout=120)
        zstd_diff = len(out.stdout)
    return {
        "patch": len(patch),
        "header": 32,
        "control_bz2": h.control_length,
        "control_records": len(bz2.decompress(patch[32:a])) // 24,
        "diff_bz2": h.diff_length,
        "extra_bz2": len(patch) - b,
        "extra_raw": len(bz2.decompress(patch[b:])),
        "diff_nonzero_bytes": sum(1 for x in diff if x),
        "diff_block_as_zstd19": zstd_diff,
        "diff_block_as_xz": len(lzma.compress(diff, preset=9 | lzma.PRESET_EXTREME)),
        # the other lever: diffing the compressed artifacts instead of the plain .tflite
        "bsdiff4_of_zlib_artifacts": len(make_patch(zlib.compress(old, 9), zlib.compress(new, 9))),
    }


@dataclass
class DeltaRow:
    pair: str
    variant: str
    full_bytes: int
    full_zlib_bytes: int
    bsdiff4_bytes: int
    zstd_patch_from_bytes: int
    xdelta3_bytes: int
    changed_bytes: int  # positions that differ (same-length files) or -1
    changed_tensors: str
    shipped: bool  # DeltaPolicy() decision: delta or full artifact

    @property
    def bsdiff_vs_full(self) -> float:
        return self.bsdiff4_bytes / self.full_bytes

    @property
    def bsdiff_vs_best_other(self) -> float:
        return self.bsdiff4_bytes / min(self.zstd_patch_from_bytes, self.xdelta3_bytes)


def delta_row(pair: str, variant: str, old: bytes, new: bytes, signer: ReleaseSigner) -> DeltaRow:
    rel = build_release(
        new,
        model="digits-cnn",
        version="1.1.0",
        counter=2,
        hardware_classes=["pi-4"],
        variant=variant,
        signer=signer,
        previous=[PreviousArtifact("1.0.0", 1, old)],
        delta_policy=DeltaPolicy(),
    )
    patch = make_patch(old, new)
    diff_positions = (
        int(np.count_nonzero(np.frombuffer(old, np.uint8) != np.frombuffer(new, np.uint8)))
        if len(old) == len(new)
        else -1
    )
    return DeltaRow(
        pair=pair,
        variant=variant,
        full_bytes=len(new),
        full_zlib_bytes=compressed_size(new),
        bsdiff4_bytes=len(patch),
        zstd_patch_from_bytes=zstd_delta(old, new),
        xdelta3_bytes=xdelta3_delta(old, new),
        changed_bytes=diff_positions,
        changed_tensors=changed_tensors(old, new),
        shipped=bool(rel.manifest.deltas),
    )


# --- timings --------------------------------------------------------------------------------------------


def median_us(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def timings(artifacts: dict[str, bytes], old: bytes, new: bytes, repeat: int) -> list[dict[str, Any]]:
    root = keys.generate_private_key()
    signer = ReleaseSigner.certified_by(root, not_before=datetime.now(UTC) - timedelta(hours=1))
    rel = build_release(
        new, model="digits-cnn", version="1.1.0", counter=2, hardware_classes=["pi-4"],
        variant="full_int8", signer=signer, previous=[PreviousArtifact("1.0.0", 1, old)],
    )  # fmt: skip
    doc = parse_document(rel.manifest_bytes)
    message = canonical_bytes(doc)
    sig = bytes.fromhex(doc["signature"])
    pub = keys.raw_public_key(signer.private_key)
    device = DeviceTrust([keys.raw_public_key(root)], hardware_class="pi-4", installed_counter=1)
    patch = rel.patches[hashlib.sha256(old).hexdigest()]
    base_sha, new_sha = hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()
    rows: list[dict[str, Any]] = [
        {"op": "sign manifest (canonical JSON + Ed25519)", "bytes": len(message),
         "us": median_us(lambda: keys.sign(signer.private_key, canonical_bytes(doc)), repeat)},
        {"op": "Ed25519 verify, one signature", "bytes": len(message),
         "us": median_us(lambda: keys.verify_signature(pub, sig, message), repeat)},
        {"op": "verify_manifest (parse, schema, cert + manifest signatures, rules)",
         "bytes": len(rel.manifest_bytes),
         "us": median_us(lambda: verify_manifest(rel.manifest_bytes, device), repeat)},
        {"op": "baseline: sha256 of the manifest bytes", "bytes": len(rel.manifest_bytes),
         "us": median_us(lambda: hashlib.sha256(rel.manifest_bytes).digest(), repeat)},
    ]  # fmt: skip
    for name, data in artifacts.items():
        rows.append(
            {"op": f"baseline: sha256 of artifact ({name})", "bytes": len(data),
             "us": median_us(lambda data=data: hashlib.sha256(data).digest(), repeat)}
        )  # fmt: skip
    rows += [
        {"op": "bsdiff4 diff (server, fine-tuned int8)", "bytes": len(new),
         "us": median_us(lambda: make_patch(old, new), max(5, repeat // 20))},
        {"op": "apply_patch incl. base+result sha256 (device, fine-tuned int8)", "bytes": len(new),
         "us": median_us(lambda: apply_patch(old, patch, base_sha256=base_sha, result_sha256=new_sha,
                                             result_length=len(new)), repeat)},
        {"op": "baseline: zlib inflate of full artifact (fine-tuned int8)", "bytes": len(new),
         "us": median_us(lambda c=zlib.compress(new, 9): zlib.decompress(c), repeat)},
    ]  # fmt: skip
    return rows


# --- report ---------------------------------------------------------------------------------------------


def delta_table(rows: list[DeltaRow]) -> Table:
    t = Table(title="Delta size (bytes); ratio = bsdiff4 / full artifact")
    cols = ("pair", "variant", "full", "full zlib", "bsdiff4", "zstd --patch-from", "xdelta3",
            "bsdiff4/full", "vs best other", "changed bytes", "ships", "changed tensors")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="right" if col not in ("pair", "variant") else "left")
    for r in rows:
        t.add_row(
            r.pair, r.variant, f"{r.full_bytes:,}", f"{r.full_zlib_bytes:,}", f"{r.bsdiff4_bytes:,}",
            f"{r.zstd_patch_from_bytes:,}", f"{r.xdelta3_bytes:,}", f"{r.bsdiff_vs_full:.2%}",
            f"{r.bsdiff_vs_best_other:.2f}x", f"{r.changed_bytes:,}", "delta" if r.shipped else "full",
            r.changed_tensors,
        )  # fmt: skip
    return t


def timing_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Per-operation median time")
    t.add_column("operation")
    t.add_column("input bytes", justify="right")
    t.add_column("median µs", justify="right")
    for r in rows:
        t.add_row(r["op"], f"{r['bytes']:,}", f"{r['us']:.1f}")
    return t


def markdown(rows: list[DeltaRow], times: list[dict[str, Any]]) -> str:
    out = [
        "| pair | variant | full | full zlib | bsdiff4 | zstd --patch-from | xdelta3 | bsdiff4/full | "
        "bsdiff4/best other | changed bytes | policy ships | changed tensors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.pair} | {r.variant} | {r.full_bytes:,} | {r.full_zlib_bytes:,} | {r.bsdiff4_bytes:,} | "
            f"{r.zstd_patch_from_bytes:,} | {r.xdelta3_bytes:,} | {r.bsdiff_vs_full:.2%} | "
            f"{r.bsdiff_vs_best_other:.2f}× | {r.changed_bytes:,} | {'delta' if r.shipped else 'full'} | "
            f"{r.changed_tensors} |"
        )
    out += ["", "| operation | input bytes | median µs |", "|---|---:|---:|"]
    out += [f"| {r['op']} | {r['bytes']:,} | {r['us']:.1f} |" for r in times]
    return "\n".join(out)


@app.command()
def main(
    epochs: int = typer.Option(8, help="training epochs of base and retrain"),
    repeat: int = typer.Option(300, help="repetitions per timed operation (median reported)"),
    json_out: Path | None = typer.Option(None, "--json", help="write machine-readable results here"),
    md: bool = typer.Option(False, "--markdown", help="also print Markdown tables to stdout"),
    save_artifacts: Path | None = typer.Option(None, help="directory to keep the .tflite files in"),
) -> None:
    for tool in ("zstd", "xdelta3"):
        if shutil.which(tool) is None:
            raise typer.BadParameter(f"{tool} is not installed")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training base, fine-tuned and retrained models", total=None)
        models = build_models(epochs)
        auto = build_models(epochs, stable_names=False)  # the same, with Keras' per-process layer numbering
        models |= {"base-auto": auto["base"], "finetuned-auto": auto["finetuned"]}
        progress.update(task, description="converting to .tflite", total=2 * len(models), completed=0)
        tfl: dict[tuple[str, str], bytes] = {}
        for name, model in models.items():
            for variant in ("float32", "full_int8"):
                tfl[name, variant] = to_tflite(model, variant)
                progress.advance(task)
        if save_artifacts:
            save_artifacts.mkdir(parents=True, exist_ok=True)
            for (name, variant), data in tfl.items():
                (save_artifacts / f"{name}-{variant}.tflite").write_bytes(data)
        progress.update(task, description="computing deltas", total=6, completed=0)
        signer = ReleaseSigner.certified_by(keys.generate_private_key())
        rows = []
        pairs = (
            ("fine-tuned head", "base", "finetuned"),
            ("full retrain", "base", "retrain"),
            ("fine-tuned head, auto layer names", "base-auto", "finetuned-auto"),
        )
        for pair, old, new in pairs:
            for variant in ("float32", "full_int8"):
                rows.append(delta_row(pair, variant, tfl[old, variant], tfl[new, variant], signer))
                progress.advance(task)
        anatomy = {v: patch_anatomy(tfl["base", v], tfl["finetuned", v]) for v in ("float32", "full_int8")}
        progress.update(task, description="timing sign/verify/patch", total=None)
        artifacts = {v: tfl["finetuned", v] for v in ("float32", "full_int8")}
        times = timings(artifacts, tfl["base", "full_int8"], tfl["finetuned", "full_int8"], repeat)
    console.print(delta_table(rows))
    anat = Table(title="bsdiff4 patch anatomy, fine-tuned head (bytes)")
    anat.add_column("field")
    for v in anatomy:
        anat.add_column(v, justify="right")
    for field in anatomy["float32"]:
        anat.add_row(field, *(f"{anatomy[v][field]:,}" for v in anatomy))
    console.print(anat)
    console.print(timing_table(times))
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": f"{platform.machine()} {platform.python_version()}",
        "epochs": epochs,
        "repeat": repeat,
    }
    if json_out:
        payload = {
            "meta": meta,
            "deltas": [
                asdict(r) | {"bsdiff_vs_full": r.bsdiff_vs_full, "vs_best_other": r.bsdiff_vs_best_other}
                for r in rows
            ],
            "timings": times,
            "patch_anatomy": anatomy,
        }  # fmt: skip
        json_out.write_text(json.dumps(payload, indent=2))
    if md:
        print(f"<!-- {meta} -->\n" + markdown(rows, times))
        print("\n| bsdiff4 patch, fine-tuned head | " + " | ".join(anatomy) + " |\n|---|---:|---:|")
        for field in anatomy["float32"]:
            print(f"| {field} | " + " | ".join(f"{anatomy[v][field]:,}" for v in anatomy) + " |")


if __name__ == "__main__":
    app()
