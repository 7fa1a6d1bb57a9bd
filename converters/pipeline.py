"""convert_model: one Keras classifier in, one complete, validated artifact directory out.

Layout of out_dir: float32.tflite, float16.tflite, dynamic_int8.tflite, full_int8.tflite, model.keras,
tflm/<name>_model_data.cc and .h, golden.npz, report.json (schema: docs/converter-report.md).
The directory is built next to out_dir under a hidden temporary name and renamed into place, so a
failure at any step leaves nothing at out_dir and no temporary directory behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import os
import platform
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from converters import baselines as bl
from converters import model_io
from converters.config import ConversionConfig, TaskInfo, VariantName
from converters.errors import ConversionError, OutputExistsError, UnsupportedOpError
from converters.hardware_fit import VariantFootprint, fit_all
from converters.report import (
    Artifact,
    Baselines,
    ConversionMeasurements,
    ConversionReport,
    GoldenReport,
    GoldenTolerance,
    ModelInfo,
    TflmReport,
    VariantReport,
)
from converters.tflite_inspect import activation_bytes, operator_names
from converters.tflite_variants import build_variant
from converters.tflm_export import c_array_sources
from converters.tflm_probe import TflmProbe
from converters.validation import (
    LiteRtRunner,
    VariantRun,
    dequantize,
    edge_case_inputs,
    expected_output_range,
    measure_latency,
    quantize,
    run_edge_cases,
)
from firmware_stubs.hardware_profiles import PROFILES

Progress = Callable[[str, float], None]
GOLDEN_FILE = "golden.npz"
KERAS_FILE = "model.keras"
TFLM_DIR = "tflm"
_FLOAT_TOLERANCE_FLOOR = 1e-5


def convert_model(
    model: Any,
    calibration: np.ndarray,
    evaluation_x: np.ndarray,
    evaluation_y: np.ndarray,
    *,
    name: str,
    version: str,
    out_dir: str | os.PathLike[str],
    config: ConversionConfig | None = None,
    task: TaskInfo | None = None,
    progress: Progress | None = None,
) -> ConversionReport:
    """Convert, validate and package `model`; see the module docstring. Raises ConversionError subclasses."""
    config = config or ConversionConfig()
    out = Path(out_dir)
    if not name.strip() or not version.strip():
        raise ConversionError("name and version must be non-empty")
    if (out.exists() or out.is_symlink()) and not config.overwrite:
        raise OutputExistsError(f"output directory {out} already exists (pass overwrite to replace it)")
    report_progress = progress or (lambda _stage, _fraction: None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        report = _convert_into(
            model, calibration, evaluation_x, evaluation_y, name, version, tmp, config, task, report_progress
        )
        _move_into_place(tmp, out, config.overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report_progress("done", 1.0)
    return report


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    if not (out.exists() or out.is_symlink()):
        try:
            os.rename(tmp, out)
            return
        except OSError as exc:  # someone created out_dir meanwhile
            raise OutputExistsError(f"output directory {out} appeared during the conversion") from exc
    if not overwrite:
        raise OutputExistsError(f"output directory {out} already exists (pass overwrite to replace it)")
    # Two renames: out is briefly absent but never half-written; the old tree is removed afterwards.
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


class _Stages:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, key: str, description: str, fraction: float) -> Iterator[None]:
        self.progress(description, fraction)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[key] = round(self.seconds.get(key, 0.0) + time.perf_counter() - start, 3)


def _convert_into(
    model_in: Any,
    calibration: np.ndarray,
    evaluation_x: np.ndarray,
    evaluation_y: np.ndarray,
    name: str,
    version: str,
    work: Path,
    config: ConversionConfig,
    task: TaskInfo | None,
    progress: Progress,
) -> ConversionReport:
    started = time.perf_counter()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    st = _Stages(progress)

    with st.stage("load", "loading model and checking data", 0.0):
        model = model_io.load_model(model_in)
        shape = model_io.input_shape(model)
        classes = model_io.num_classes(model)
        calibration = model_io.check_calibration(calibration, shape)
        evaluation_x, evaluation_y = model_io.check_evaluation(evaluation_x, evaluation_y, shape, classes)
        if task is not None and len(task.class_names) != classes:
            raise ConversionError(
                f"task names {len(task.class_names)} classes but the model outputs {classes}"
            )
        keras_bytes = model_io.stable_keras_bytes(model, model_in)
        import keras

        keras.utils.set_random_seed(config.seed)

    with st.stage("float_reference", "running the float Keras model", 0.03):
        float_eval = _predict(model, evaluation_x)
        float_calib = _predict(model, calibration)
        cases = edge_case_inputs(calibration)
        float_edge = _predict(model, np.stack([np.full(shape, v, np.float32) for _, v in cases]))
        float_accuracy = float((float_eval.argmax(1) == evaluation_y).mean())

    built: dict[VariantName, bytes] = {}
    for i, variant in enumerate(config.variants):
        with st.stage("build", f"converting {variant}", 0.06 + 0.34 * i / len(config.variants)):
            built[variant] = build_variant(model, variant, calibration)

    expected = expected_output_range(float_calib)
    runs: dict[str, VariantRun] = {}
    for i, variant in enumerate(config.variants):
        with st.stage("validate", f"validating {variant} on LiteRT", 0.4 + 0.3 * i / len(config.variants)):
            runner = LiteRtRunner(built[variant])
            raw, outputs = runner.run(evaluation_x)
            runs[variant] = VariantRun(
                input=runner.input,
                output=runner.output,
                outputs=outputs,
                raw_outputs=raw,
                edge_cases=run_edge_cases(runner, cases, float_edge, expected, shape),
                measurements=measure_latency(
                    built[variant], evaluation_x[0], config.latency_warmup_runs, config.latency_runs
                ),
            )
    variants = {
        v: _variant_report(v, built[v], runs[v], float_eval, float_accuracy, evaluation_y, config)
        for v in config.variants
    }

    rng = np.random.default_rng(config.seed)
    tflm_order = np.sort(rng.permutation(len(evaluation_x))[: config.tflm_eval_size])
    golden_idx = np.sort(rng.permutation(len(evaluation_x))[: config.golden_size])

    profile_names = list(config.profiles) if config.profiles is not None else list(PROFILES)
    tflm_profiles = [p for p in profile_names if PROFILES[p].runtime == "tflm"]
    tflm: TflmReport | None = None
    tflm_files: dict[str, bytes] = {}
    if "full_int8" in built:
        with st.stage("tflm", "measuring the TFLite Micro arena", 0.72):
            tflm, tflm_files = _tflm_section(
                name,
                built["full_int8"],
                runs["full_int8"],
                evaluation_x,
                evaluation_y,
                tflm_order,
                tflm_profiles,
            )

    with st.stage("fit", "checking hardware fit, baselines, golden set", 0.88):
        footprints = [
            VariantFootprint(
                variant=v,
                flash_bytes=len(built[v]),
                litert_ram_bytes=variants[v].ram_bytes,
                tflm_ram_bytes=(
                    tflm.arena_bytes + tflm.io_bytes
                    if v == "full_int8" and tflm and tflm.arena_bytes
                    else None
                ),
                accepted=variants[v].status == "accepted",
            )
            for v in config.variants
        ]
        hardware = fit_all(footprints, profile_names)
        baselines = _baselines(calibration, float_calib, shape, classes, config, task)
        golden_bytes, golden = _golden(evaluation_x, evaluation_y, float_eval, runs, golden_idx, config)

    with st.stage("write", "writing artifacts", 0.95):
        files: dict[str, bytes] = {f"{v}.tflite": b for v, b in built.items()}
        files[KERAS_FILE] = keras_bytes
        files[GOLDEN_FILE] = golden_bytes
        files.update(tflm_files)
        for rel, data in files.items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        artifacts = {
            rel: Artifact(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            for rel, data in sorted(files.items())
        }
        report = ConversionReport(
            name=name,
            version=version,
            config=config,
            task=task,
            model=ModelInfo(
                input_shape=list(shape),
                num_classes=classes,
                float_accuracy=float_accuracy,
                parameters=int(model.count_params()),
                source_sha256=artifacts[KERAS_FILE].sha256,
            ),
            calibration_samples=len(calibration),
            evaluation_samples=len(evaluation_x),
            variants=variants,
            tflm=tflm,
            hardware_fit=hardware,
            baselines=baselines,
            golden=golden,
            versions=_versions(),
            artifacts=artifacts,
            measurements=ConversionMeasurements(created_at=created, total_seconds=0.0, stage_seconds={}),
        )
        report.measurements.total_seconds = round(time.perf_counter() - started, 3)
        report.measurements.stage_seconds = dict(st.seconds)
        report.write(work)
    return report


def _predict(model: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    # Direct calls rather than model.predict: predict retraces (and warns) for every new input size.
    outputs = [np.asarray(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(outputs).astype(np.float32)


def _variant_report(
    variant: VariantName,
    model_bytes: bytes,
    run: VariantRun,
    float_eval: np.ndarray,
    float_accuracy: float,
    labels: np.ndarray,
    config: ConversionConfig,
) -> VariantReport:
    outputs: np.ndarray = run.outputs
    finite = bool(np.isfinite(outputs).all())
    accuracy = float((outputs.argmax(1) == labels).mean())
    delta_pp = round((accuracy - float_accuracy) * 100.0, 6)
    errors = np.abs(outputs - float_eval) if finite else None
    reasons = []
    if not finite:
        reasons.append("non-finite outputs on the evaluation set")
    if delta_pp < -config.max_accuracy_drop_pp:
        reasons.append(
            f"accuracy {accuracy:.2%} is {-delta_pp:.2f} pp below float {float_accuracy:.2%} "
            f"(limit {config.max_accuracy_drop_pp:.2f} pp)"
        )
    for case in run.edge_cases:
        if not case.finite:
            reasons.append(f"edge case {case.name} gives non-finite outputs")
        elif not case.in_range:
            reasons.append(f"edge case {case.name} gives outputs outside the expected range")
    return VariantReport(
        variant=variant,
        file=f"{variant}.tflite",
        bytes=len(model_bytes),
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        input=run.input,
        output=run.output,
        ops=operator_names(model_bytes),
        accuracy=accuracy,
        accuracy_delta_pp=delta_pp,
        top1_agreement=float((outputs.argmax(1) == float_eval.argmax(1)).mean()),
        max_abs_error=float(errors.max()) if errors is not None else None,
        mean_abs_error=float(errors.mean()) if errors is not None else None,
        edge_cases=run.edge_cases,
        ram_bytes=activation_bytes(model_bytes),
        status="rejected" if reasons else "accepted",
        rejection_reason="; ".join(reasons) or None,
        measurements=run.measurements,
    )


def _tflm_section(
    name: str,
    model_bytes: bytes,
    litert: VariantRun,
    evaluation_x: np.ndarray,
    evaluation_y: np.ndarray,
    order: np.ndarray,
    tflm_profiles: list[str],
) -> tuple[TflmReport, dict[str, bytes]]:
    sources = c_array_sources(model_bytes, name)
    files = {
        f"{TFLM_DIR}/{sources.source_name}": sources.source.encode(),
        f"{TFLM_DIR}/{sources.header_name}": sources.header.encode(),
    }
    ops = operator_names(model_bytes)
    io_bytes = (
        int(np.prod(litert.input.shape)) * np.dtype(litert.input.dtype).itemsize
        + int(np.prod(litert.output.shape)) * np.dtype(litert.output.dtype).itemsize
    )
    arena = recorded = accuracy = agreement = max_diff = None
    with TflmProbe() as probe:
        missing = probe.missing_ops(ops)
        if missing and tflm_profiles:
            raise UnsupportedOpError(
                missing,
                f"TFLite Micro lacks {len(missing)} operator(s) the full-int8 model needs: "
                f"{', '.join(missing)} (needed for {', '.join(tflm_profiles)}; restrict profiles to "
                "LiteRT classes to convert anyway)",
            )
        if not missing:
            measured = probe.minimum_arena(model_bytes)
            if measured is not None:
                arena, recorded = measured.arena_bytes, measured.recorded_bytes
                x_q = quantize(evaluation_x[order], litert.input)
                raw = probe.run(model_bytes, arena, x_q)
                predictions = dequantize(raw, litert.output).argmax(1)
                accuracy = float((predictions == evaluation_y[order]).mean())
                litert_raw = np.asarray(litert.raw_outputs)[order]
                agreement = float((predictions == litert_raw.argmax(1)).mean())
                max_diff = int(np.abs(raw.astype(np.int32) - litert_raw.astype(np.int32)).max())
    report = TflmReport(
        source_file=f"{TFLM_DIR}/{sources.source_name}",
        header_file=f"{TFLM_DIR}/{sources.header_name}",
        array_name=sources.array_name,
        ops=ops,
        unsupported_ops=missing,
        arena_bytes=arena,
        arena_granularity_bytes=1,
        arena_recorded_bytes=recorded,
        io_bytes=io_bytes,
        eval_samples=len(order),
        accuracy=accuracy,
        agreement_with_litert=agreement,
        max_abs_diff_vs_litert_int8=max_diff,
    )
    return report, files


def _baselines(
    calibration: np.ndarray,
    float_calib: np.ndarray,
    shape: tuple[int, ...],
    classes: int,
    config: ConversionConfig,
    task: TaskInfo | None,
) -> Baselines:
    spec = bl.make_feature_spec(shape, config.max_baseline_features)
    features = bl.feature_summary(calibration, spec)
    histograms = [
        bl.histogram(f"feature_{i}", features[:, i], bl.quantile_edges(features[:, i], config.histogram_bins))
        for i in range(features.shape[1])
    ]
    score_spec = bl.make_output_score_spec(
        classes, task.positive_class_ids if task else None, not bl.looks_like_probabilities(float_calib)
    )
    scores = bl.output_score(float_calib, score_spec)
    return Baselines(
        samples=len(calibration),
        feature_spec=spec,
        features=histograms,
        output_score_spec=score_spec,
        output_score=bl.histogram("output_score", scores, bl.score_edges(config.histogram_bins)),
    )


def _golden(
    evaluation_x: np.ndarray,
    evaluation_y: np.ndarray,
    float_eval: np.ndarray,
    runs: dict[str, VariantRun],
    idx: np.ndarray,
    config: ConversionConfig,
) -> tuple[bytes, GoldenReport]:
    arrays: dict[str, np.ndarray] = {
        "inputs": evaluation_x[idx].astype(np.float32),
        "float_outputs": float_eval[idx].astype(np.float32),
        "labels": evaluation_y[idx].astype(np.int64),
    }
    keys = {
        "inputs": "float32 model inputs after preprocessing, (size, *input_shape)",
        "float_outputs": "float Keras model outputs for inputs, (size, classes)",
        "labels": "true class ids, (size,)",
    }
    if "full_int8" in runs:
        arrays["int8_inputs"] = quantize(arrays["inputs"], runs["full_int8"].input)
        keys["int8_inputs"] = "inputs quantized with full_int8's input scale and zero point"
    tolerances = {}
    for variant, run in runs.items():
        outputs = np.asarray(run.outputs)[idx]
        measured = (
            float(np.abs(outputs - arrays["float_outputs"]).max()) if np.isfinite(outputs).all() else None
        )
        scale = run.output.quantization.scale
        floor = scale if scale is not None else _FLOAT_TOLERANCE_FLOOR
        tolerances[variant] = GoldenTolerance(
            max_abs_error_measured=measured,
            tolerance=max((measured or 0.0) * config.golden_tolerance_margin, floor),
            top1_agreement=float((outputs.argmax(1) == arrays["float_outputs"].argmax(1)).mean()),
        )
    buffer = io.BytesIO()
    # np.savez writes fixed zip timestamps, so equal arrays give equal bytes.
    np.savez(buffer, **arrays)
    report = GoldenReport(file=GOLDEN_FILE, size=len(idx), keys=keys, tolerances=tolerances)
    return buffer.getvalue(), report


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "ai-edge-litert": dist("ai-edge-litert"),
        "tflite-micro": dist("tflite-micro"),
        "numpy": np.__version__,
        "flatbuffers": dist("flatbuffers"),
        "tinyfleet": dist("tinyfleet"),
    }
