"""Health check on this device's runtime: golden outputs, latency budget, arena fit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from device_agent.health_check import run_health_check
from device_agent.model_manager import ModelArtifact
from firmware_stubs.hardware_profiles import CORTEX_M4F, ESP32_S3, PI_4, PI_ZERO_2W


@pytest.mark.parametrize("profile", [PI_ZERO_2W, CORTEX_M4F], ids=lambda p: p.name)
def test_good_model_passes_on_both_runtimes(chain_dir: Path, profile) -> None:
    art = ModelArtifact.from_dir(chain_dir / "mlp", profile)
    res = run_health_check(art, profile, max_latency_us=1e9)
    assert res.passed, res.reason
    assert [c.name for c in res.checks] == ["fits", "loads", "golden", "latency"]
    assert res.max_abs_error is not None and res.tolerance is not None
    assert res.max_abs_error <= res.tolerance
    assert res.device_latency_us is not None and res.device_latency_us > 0


def test_every_litert_variant_passes(chain_dir: Path) -> None:
    for variant in ("float32", "float16", "dynamic_int8", "full_int8"):
        art = ModelArtifact.from_dir(chain_dir / "linear", PI_4, variant=variant)
        assert run_health_check(art, PI_4).passed


def test_training_serving_skew_in_preprocessing_is_caught(chain_dir: Path) -> None:
    """The device forgot to divide pixels by 16 (raw 0..16 instead of the trained 0..1)."""
    art = ModelArtifact.from_dir(chain_dir / "mlp", PI_ZERO_2W)
    res = run_health_check(art, PI_ZERO_2W, input_transform=lambda x: x * 16.0)
    assert not res.passed and res.failed_check == "golden"
    assert "tolerance" in (res.reason or "")
    assert res.max_abs_error is not None and res.tolerance is not None and res.max_abs_error > res.tolerance


def test_latency_over_budget_fails(chain_dir: Path) -> None:
    art = ModelArtifact.from_dir(chain_dir / "wide", PI_ZERO_2W)
    res = run_health_check(art, PI_ZERO_2W, max_latency_us=0.001)
    assert not res.passed and res.failed_check == "latency"
    assert "pi-zero-2w" in (res.reason or "")


def test_arena_that_does_not_fit_fails_before_loading(chain_dir: Path) -> None:
    # Force the int8 variant onto the Cortex-M4F: the measured arena exceeds its 160 KiB budget.
    art = ModelArtifact.from_dir(chain_dir / "wide", PI_ZERO_2W, variant="full_int8")
    res = run_health_check(art, CORTEX_M4F)
    assert not res.passed and res.failed_check == "fits"
    assert "163840" in (res.reason or "")
    assert run_health_check(art, ESP32_S3).passed


def test_float_variant_on_tflm_does_not_fit(chain_dir: Path) -> None:
    art = ModelArtifact.from_dir(chain_dir / "mlp", PI_ZERO_2W, variant="float32")
    res = run_health_check(art, CORTEX_M4F)
    assert res.failed_check == "fits" and "full_int8" in (res.reason or "")


def _copy(chain_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "mlp"
    shutil.copytree(chain_dir / "mlp", d)
    return d


def test_missing_or_corrupt_golden_fails_with_reason(chain_dir: Path, tmp_path: Path) -> None:
    d = _copy(chain_dir, tmp_path)
    (d / "golden.npz").unlink()
    res = run_health_check(ModelArtifact.from_dir(d, PI_ZERO_2W), PI_ZERO_2W)
    assert res.failed_check == "golden" and "no golden.npz" in (res.reason or "")
    (d / "golden.npz").write_bytes(b"PK\x03\x04 broken zip")
    res = run_health_check(ModelArtifact.from_dir(d, PI_ZERO_2W), PI_ZERO_2W)
    assert res.failed_check == "golden" and "unreadable" in (res.reason or "")


def test_golden_with_wrong_shapes_fails(chain_dir: Path, tmp_path: Path) -> None:
    d = _copy(chain_dir, tmp_path)
    np.savez(
        d / "golden.npz",
        inputs=np.zeros((4, 8, 8, 1), np.float32),
        float_outputs=np.zeros((3, 10), np.float32),
    )
    res = run_health_check(ModelArtifact.from_dir(d, PI_ZERO_2W), PI_ZERO_2W)
    assert res.failed_check == "golden" and "do not pair up" in (res.reason or "")
    np.savez(
        d / "golden.npz", inputs=np.zeros((2, 4, 4), np.float32), float_outputs=np.zeros((2, 10), np.float32)
    )
    res = run_health_check(ModelArtifact.from_dir(d, PI_ZERO_2W), PI_ZERO_2W)
    assert res.failed_check == "golden" and "takes (8, 8, 1)" in (res.reason or "")


def test_golden_from_another_model_fails(chain_dir: Path, tmp_path: Path) -> None:
    """An artifact whose golden file belongs to a different model: the outputs do not match."""
    d = _copy(chain_dir, tmp_path)
    shutil.copy(chain_dir / "linear" / "golden.npz", d / "golden.npz")
    res = run_health_check(ModelArtifact.from_dir(d, PI_ZERO_2W), PI_ZERO_2W)
    assert not res.passed and res.failed_check == "golden"
