"""The artifact directory and report of one real conversion, checked against independent recomputation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from converters.baselines import bin_counts, feature_summary
from converters.report import ConversionReport
from firmware_stubs.hardware_profiles import PROFILES

VARIANTS = ["float32", "float16", "dynamic_int8", "full_int8"]


def _litert(model: bytes):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter, x: np.ndarray) -> np.ndarray:
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    outputs = []
    for sample in x:
        interpreter.set_tensor(inp["index"], sample[np.newaxis])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(outputs)


def test_directory_layout(converted) -> None:
    files = sorted(str(p.relative_to(converted.out_dir)) for p in converted.out_dir.rglob("*") if p.is_file())
    assert files == sorted(
        [f"{v}.tflite" for v in VARIANTS]
        + [
            "model.keras",
            "golden.npz",
            "report.json",
            "tflm/digits_model_data.cc",
            "tflm/digits_model_data.h",
        ]
    )
    assert not [p for p in converted.out_dir.parent.iterdir() if p.name.startswith(".")]


def test_report_round_trips_and_lists_every_artifact(converted) -> None:
    on_disk = ConversionReport.read(converted.out_dir)
    assert on_disk == converted.report
    raw = json.loads((converted.out_dir / "report.json").read_text())
    assert raw["schema_version"] == "1.0"
    for rel, artifact in on_disk.artifacts.items():
        data = (converted.out_dir / rel).read_bytes()
        assert artifact.bytes == len(data)
        assert artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert set(on_disk.artifacts) == {
        str(p.relative_to(converted.out_dir))
        for p in converted.out_dir.rglob("*")
        if p.is_file() and p.name != "report.json"
    }


def test_model_copy_is_the_input_file(converted, digits_model_path: Path) -> None:
    assert (converted.out_dir / "model.keras").read_bytes() == digits_model_path.read_bytes()


def test_variant_accuracy_recomputed_with_litert(converted, digits) -> None:
    report = converted.report
    assert report.model.float_accuracy > 0.8  # the fixture model learned the task
    for variant in VARIANTS:
        v = report.variants[variant]
        interpreter = _litert((converted.out_dir / v.file).read_bytes())
        inp = interpreter.get_input_details()[0]
        x = digits.x_eval
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            assert (v.input.quantization.scale, v.input.quantization.zero_point) == (
                pytest.approx(scale),
                zero,
            )
            x = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
        predictions = _run(interpreter, x).argmax(1)
        assert v.accuracy == pytest.approx(float((predictions == digits.y_eval).mean()))
        assert v.accuracy_delta_pp == pytest.approx(
            (v.accuracy - report.model.float_accuracy) * 100, abs=1e-4
        )
        assert v.status == "accepted", v.rejection_reason
        assert v.bytes == (converted.out_dir / v.file).stat().st_size
    assert report.variants["full_int8"].input.dtype == "int8"
    assert report.variants["full_int8"].output.dtype == "int8"
    assert report.variants["float32"].max_abs_error < 1e-4
    # Quantization makes files smaller and errors larger, in that order.
    assert report.variants["full_int8"].bytes < report.variants["float32"].bytes
    assert report.variants["full_int8"].max_abs_error > report.variants["float32"].max_abs_error


def test_edge_cases_and_latency_recorded(converted) -> None:
    for v in converted.report.variants.values():
        assert [c.name for c in v.edge_cases] == [
            "zeros",
            "calibration_min",
            "calibration_max",
            "twice_calibration_max",
        ]
        assert all(c.finite and c.in_range for c in v.edge_cases)
        assert v.latency_warmup_us > 0 and v.latency_steady_us > 0
        assert v.measurements.latency_runs == converted.report.config.latency_runs
        assert v.ram_bytes > 0


def test_ram_counts_io_tensors(converted) -> None:
    v = converted.report.variants
    # float32 holds a 64-float input and 10-float output at least; int8 a quarter of that.
    assert v["float32"].ram_bytes >= 4 * (64 + 10)
    assert v["full_int8"].ram_bytes >= 64 + 10
    assert v["full_int8"].ram_bytes < v["float32"].ram_bytes
    # float16 dequantizes its weights into float32 tensors at load time.
    assert v["float16"].ram_bytes > v["float32"].ram_bytes


def test_hardware_fit_follows_the_profiles(converted) -> None:
    report = converted.report
    assert set(report.hardware_fit) == set(PROFILES)
    arena_plus_io = report.tflm.arena_bytes + report.tflm.io_bytes
    for name, fit in report.hardware_fit.items():
        profile = PROFILES[name]
        for variant, vf in fit.variants.items():
            v = report.variants[variant]
            ram = arena_plus_io if profile.runtime == "tflm" else v.ram_bytes
            expected = (
                variant in profile.supported_variants
                and v.bytes <= profile.model_flash_budget_bytes
                and ram <= profile.model_ram_budget_bytes
            )
            assert vf.fits == expected, (name, variant)
            assert (vf.reason is None) == expected
        preferred = [v for v in profile.preferred_variants if fit.variants[v].fits]
        assert fit.default_variant == preferred[0]
    assert report.hardware_fit["cortex-m4f"].fitting_variants == ["full_int8"]
    assert "runs only full_int8" in report.hardware_fit["esp32-s3"].variants["float32"].reason


def test_golden_file_checks_out_on_litert(converted) -> None:
    report = converted.report
    with np.load(converted.out_dir / report.golden.file) as golden:
        arrays = {k: golden[k] for k in golden.files}
    assert set(arrays) == set(report.golden.keys)
    n = report.golden.size
    assert n == report.config.golden_size
    assert arrays["inputs"].dtype == np.float32 and arrays["inputs"].shape == (n, 8, 8, 1)
    assert arrays["float_outputs"].shape == (n, 10)
    q = report.variants["full_int8"].input.quantization
    expected_int8 = np.clip(np.round(arrays["inputs"] / q.scale) + q.zero_point, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(arrays["int8_inputs"], expected_int8)
    for variant in VARIANTS:
        v = report.variants[variant]
        tolerance = report.golden.tolerances[variant].tolerance
        interpreter = _litert((converted.out_dir / v.file).read_bytes())
        x = arrays["int8_inputs"] if v.input.dtype == "int8" else arrays["inputs"]
        y = _run(interpreter, x).astype(np.float32)
        if v.output.quantization.scale is not None:
            y = (y - v.output.quantization.zero_point) * v.output.quantization.scale
        # What a device health check does: every output within the tolerance of the float model.
        assert np.abs(y - arrays["float_outputs"]).max() <= tolerance, variant


def test_baselines_reproduce_from_calibration(converted, digits) -> None:
    b = converted.report.baselines
    assert b.samples == len(digits.calibration)
    assert len(b.features) == 8  # one per image column
    features = feature_summary(digits.calibration, b.feature_spec)
    for i, hist in enumerate(b.features):
        assert len(hist.edges) <= converted.report.config.histogram_bins + 1
        assert bin_counts(features[:, i], hist.edges).tolist() == hist.counts
        assert sum(hist.counts) == b.samples
    assert b.output_score_spec.kind == "max_softmax"
    assert b.output_score.edges[0] == 0.0 and b.output_score.edges[-1] == 1.0
    assert sum(b.output_score.counts) == b.samples


def test_versions_and_progress(converted) -> None:
    import keras
    import tensorflow as tf

    versions = converted.report.versions
    assert versions["tensorflow"] == tf.__version__ and versions["keras"] == keras.__version__
    assert {"ai-edge-litert", "tflite-micro", "numpy", "python"} <= set(versions)
    assert "not installed" not in versions.values()
    fractions = [f for _, f in converted.stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("TFLite Micro" in stage for stage, _ in converted.stages)
