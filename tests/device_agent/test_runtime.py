"""Runtime adapters on real converted models: LiteRT and the real TFLite Micro interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device_agent.runtime.base import InvokeError, ModelDoesNotFit, ModelLoadError, dequantize, quantize
from device_agent.runtime.litert import LiteRTRuntime
from device_agent.runtime.tflm import TflmRuntime, arena_for
from firmware_stubs.hardware_profiles import CORTEX_M4F, ESP32_S3


def _report(chain_dir: Path, model: str) -> dict:
    return json.loads((chain_dir / model / "report.json").read_text())


def _golden(chain_dir: Path, model: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(chain_dir / model / "golden.npz") as z:
        return z["inputs"], z["float_outputs"]


@pytest.mark.parametrize("variant", ["float32", "float16", "dynamic_int8", "full_int8"])
def test_litert_runs_every_variant_within_the_reports_tolerance(chain_dir: Path, variant: str) -> None:
    rt = LiteRTRuntime()
    rt.load(chain_dir / "mlp" / f"{variant}.tflite")
    inputs, expected = _golden(chain_dir, "mlp")
    tol = _report(chain_dir, "mlp")["golden"]["tolerances"][variant]["tolerance"]
    out = np.stack([rt.invoke(x).scores for x in inputs])
    assert out.dtype == np.float32 and out.shape == expected.shape
    assert np.abs(out - expected).max() <= tol
    assert rt.input_shape == (8, 8, 1)


def test_tflm_matches_litert_int8_bit_for_bit(chain_dir: Path) -> None:
    rep = _report(chain_dir, "mlp")
    path = chain_dir / "mlp" / "full_int8.tflite"
    tflm = TflmRuntime(ram_budget_bytes=CORTEX_M4F.model_ram_budget_bytes)
    tflm.load(path, arena_bytes=rep["tflm"]["arena_bytes"], io_bytes=rep["tflm"]["io_bytes"])
    lite = LiteRTRuntime()
    lite.load(path)
    inputs, _ = _golden(chain_dir, "mlp")
    for x in inputs:
        a, b = tflm.invoke(x), lite.invoke(x)
        assert np.array_equal(a.scores, b.scores)
        assert a.invoke_ns > 0
    assert tflm.arena_bytes is not None and rep["tflm"]["arena_bytes"] <= tflm.arena_bytes


def test_tflm_refuses_a_model_over_budget_before_creating_an_interpreter(chain_dir: Path) -> None:
    """In a child process: were the interpreter tried with a short arena, the child would segfault."""
    rep = _report(chain_dir, "wide")
    code = (
        "import sys\n"
        "from device_agent.runtime.tflm import TflmRuntime\n"
        "from device_agent.runtime.base import ModelDoesNotFit\n"
        f"rt = TflmRuntime(ram_budget_bytes={CORTEX_M4F.model_ram_budget_bytes})\n"
        "try:\n"
        f"    rt.load({str(chain_dir / 'wide' / 'full_int8.tflite')!r},"
        f" arena_bytes={rep['tflm']['arena_bytes']}, io_bytes={rep['tflm']['io_bytes']})\n"
        "except ModelDoesNotFit as exc:\n"
        "    print('REFUSED', exc.needed_bytes, exc.budget_bytes)\n"
        "    sys.exit(0)\n"
        "sys.exit(7)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    needed = rep["tflm"]["arena_bytes"] + rep["tflm"]["io_bytes"]
    assert f"REFUSED {needed} {CORTEX_M4F.model_ram_budget_bytes}" in proc.stdout


def test_the_same_model_fits_a_bigger_mcu(chain_dir: Path) -> None:
    rep = _report(chain_dir, "wide")
    rt = TflmRuntime(ram_budget_bytes=ESP32_S3.model_ram_budget_bytes)
    rt.load(
        chain_dir / "wide" / "full_int8.tflite",
        arena_bytes=rep["tflm"]["arena_bytes"],
        io_bytes=rep["tflm"]["io_bytes"],
    )
    inputs, _ = _golden(chain_dir, "wide")
    assert np.isfinite(rt.invoke(inputs[0]).scores).all()


def test_tflm_without_measured_arena_is_refused(chain_dir: Path) -> None:
    rt = TflmRuntime(ram_budget_bytes=CORTEX_M4F.model_ram_budget_bytes)
    with pytest.raises(ModelDoesNotFit, match="no measured arena"):
        rt.load(chain_dir / "mlp" / "full_int8.tflite", arena_bytes=None)
    with pytest.raises(ModelLoadError, match="positive integer"):
        rt.load(chain_dir / "mlp" / "full_int8.tflite", arena_bytes=-5)


def test_arena_is_measured_plus_margin_capped_by_budget() -> None:
    assert arena_for(4000, 100, 1_000_000) == 4000 + 1024
    assert arena_for(100_000, 100, 1_000_000) == 125_000
    assert arena_for(100_000, 100, 110_000) == 109_900  # capped: budget minus I/O
    with pytest.raises(ModelDoesNotFit):
        arena_for(100_000, 100, 100_050)


@pytest.mark.parametrize("make", [LiteRTRuntime, lambda: TflmRuntime(ram_budget_bytes=1 << 20)])
def test_bad_model_inputs_give_clear_errors(tmp_path: Path, make) -> None:
    rt = make()
    with pytest.raises(ModelLoadError, match="cannot read"):
        rt.load(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match="not a TFLite model"):
        rt.load(junk)
    with pytest.raises(ModelLoadError, match="bytes or a path"):
        rt.load(12345)
    with pytest.raises(ModelLoadError, match="no model loaded"):
        rt.invoke(np.zeros((8, 8, 1), np.float32))


def test_truncated_flatbuffer_fails_to_load_not_crash(chain_dir: Path) -> None:
    data = (chain_dir / "mlp" / "float32.tflite").read_bytes()
    rt = LiteRTRuntime()
    with pytest.raises(ModelLoadError):
        rt.load(data[: len(data) // 3])


def test_wrong_input_shape_is_an_invoke_error(chain_dir: Path) -> None:
    rt = LiteRTRuntime()
    rt.load(chain_dir / "mlp" / "full_int8.tflite")
    with pytest.raises(InvokeError, match=r"takes \(8, 8, 1\)"):
        rt.invoke(np.zeros((4, 4), np.float32))
    assert rt.invoke(np.zeros((1, 8, 8, 1), np.float32)).scores.shape == (10,)  # batch axis of one is fine


def test_quantize_saturates_and_round_trips(chain_dir: Path) -> None:
    rt = LiteRTRuntime()
    rt.load(chain_dir / "mlp" / "full_int8.tflite")
    spec = rt.input_spec
    assert spec.quantized and spec.dtype == np.int8
    x = np.array([[-10.0, 0.0, 0.5, 10.0] * 16], np.float32).reshape(8, 8, 1)
    q = quantize(x, spec)
    assert q.min() == -128 and q.max() == 127
    back = dequantize(quantize(np.full((8, 8, 1), 0.5, np.float32), spec), spec)
    assert np.allclose(back, 0.5, atol=spec.scale)
