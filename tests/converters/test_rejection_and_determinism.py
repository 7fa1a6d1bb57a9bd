"""A variant that loses accuracy is rejected (and not chosen); equal inputs give equal bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converters.config import ConversionConfig, TaskInfo
from converters.pipeline import convert_model
from converters.report import ConversionReport, diff_reports


def test_badly_calibrated_full_int8_is_rejected(digits, digits_model_path: Path, tmp_path: Path) -> None:
    # Calibration covering only 5 % of the real input range: int8 inputs saturate on real data.
    squeezed = (digits.calibration * 0.05).astype(np.float32)
    task = TaskInfo(class_names=[str(i) for i in range(10)], positive_class_ids=[0, 1])
    report = convert_model(
        digits_model_path,
        squeezed,
        digits.x_eval,
        digits.y_eval,
        name="digits",
        version="bad-calib",
        out_dir=tmp_path / "out",
        task=task,
        config=ConversionConfig(max_accuracy_drop_pp=1.0),
    )
    full = report.variants["full_int8"]
    assert full.accuracy_delta_pp < -1.0
    assert full.status == "rejected"
    assert "pp below float" in full.rejection_reason and "limit 1.00 pp" in full.rejection_reason
    assert (tmp_path / "out" / "full_int8.tflite").is_file()  # still written, for inspection
    # Dynamic-range int8 does not use the calibration data and stays accepted.
    assert report.variants["dynamic_int8"].status == "accepted"
    for mcu in ("cortex-m4f", "esp32-s3"):
        assert report.hardware_fit[mcu].default_variant is None
        assert "rejected" in report.hardware_fit[mcu].default_reason
    assert report.hardware_fit["pi-4"].default_variant == "dynamic_int8"
    assert report.baselines.output_score_spec.kind == "positive_class_max"
    assert report.baselines.output_score_spec.class_ids == [0, 1]


def test_cli_conversion_in_another_process_gives_identical_artifacts(
    converted, digits, digits_model_path: Path, tmp_path: Path
) -> None:
    np.save(tmp_path / "calibration.npy", digits.calibration)
    np.savez(tmp_path / "eval.npz", x=digits.x_eval, y=digits.y_eval)
    out = tmp_path / "again"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleet_server.cli.main",
            "model",
            "convert",
            str(digits_model_path),
            "--calibration",
            str(tmp_path / "calibration.npy"),
            "--eval",
            str(tmp_path / "eval.npz"),
            "--name",
            "digits",
            "--version",
            "1.0.0",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # --json: stdout holds the report and nothing else (TF's own prints went to stderr).
    printed = ConversionReport.model_validate(json.loads(result.stdout))
    assert printed == ConversionReport.read(out)
    diff = diff_reports(converted.report, printed)
    assert diff.differing_files == [], diff
    assert diff.differing_fields == [], diff
    for rel in converted.report.artifacts:
        assert (out / rel).read_bytes() == (converted.out_dir / rel).read_bytes(), rel


def test_diff_reports_names_what_differs(converted) -> None:
    other = converted.report.model_copy(deep=True)
    other.artifacts["float16.tflite"] = other.artifacts["float16.tflite"].model_copy(
        update={"sha256": "0" * 64}
    )
    other.variants["float16"].sha256 = "0" * 64
    other.measurements.total_seconds += 100.0  # timings are not compared
    other.variants["float32"].measurements.latency_steady_us += 5.0
    diff = diff_reports(converted.report, other)
    assert diff.differing_files == ["float16.tflite"]
    assert diff.differing_fields == ["artifacts.float16.tflite.sha256", "variants.float16.sha256"]
    assert not diff.identical
    assert diff_reports(converted.report, converted.report).identical


def test_deterministic_content_has_no_timings(converted) -> None:
    content = json.dumps(converted.report.deterministic_content())
    for timing in ("latency_warmup_us", "latency_steady_us", "total_seconds", "stage_seconds", "created_at"):
        assert timing not in content
    assert "latency_steady_us" in json.dumps(converted.report.model_dump(mode="json"))


@pytest.mark.parametrize("seed", [0])
def test_overwrite_replaces_atomically(
    converted, digits, digits_model_path: Path, tmp_path: Path, seed: int
) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    report = convert_model(
        digits_model_path,
        digits.calibration,
        digits.x_eval,
        digits.y_eval,
        name="digits",
        version="1.0.0",
        out_dir=out,
        config=ConversionConfig(overwrite=True, seed=seed),
    )
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert diff_reports(report, converted.report).identical
