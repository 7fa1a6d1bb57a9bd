"""Validate a TFLite variant on the LiteRT interpreter against the float Keras model.

Follows the ML Operations chapter's optimization checklist: numerical equivalence (output errors,
top-1 agreement, accuracy delta), edge-case behaviour (constant inputs at and beyond the calibration
range), memory (non-constant tensor bytes), warm-up vs steady-state latency. Versions are recorded
by the pipeline.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from converters.report import EdgeCaseResult, QuantParams, TensorInfo, VariantMeasurements


class OutputRange(BaseModel):
    low: float
    high: float


class VariantRun(BaseModel):
    """What one variant produced; arrays stay in memory, the report takes the numbers."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    input: TensorInfo
    output: TensorInfo
    outputs: Any  # np.ndarray (M, classes), dequantized float
    raw_outputs: Any  # np.ndarray (M, classes) in the output dtype
    edge_cases: list[EdgeCaseResult]
    measurements: VariantMeasurements


def _tensor_info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero = detail.get("quantization", (0.0, 0))
    quantized = scale != 0.0
    return TensorInfo(
        shape=[int(d) for d in detail["shape"]],
        dtype=np.dtype(detail["dtype"]).name,
        quantization=QuantParams(scale=float(scale), zero_point=int(zero)) if quantized else QuantParams(),
    )


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Float inputs to the tensor's dtype (int8 inputs use the model's scale and zero point)."""
    q = info.quantization
    if q.scale is None:
        return x.astype(info.dtype)
    limits = np.iinfo(np.dtype(info.dtype))
    return np.clip(np.round(x / q.scale) + q.zero_point, limits.min, limits.max).astype(info.dtype)


def dequantize(y: np.ndarray, info: TensorInfo) -> np.ndarray:
    q = info.quantization
    if q.scale is None:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - q.zero_point) * q.scale).astype(np.float32)


class LiteRtRunner:
    """One LiteRT interpreter (single thread, batch 1) for a .tflite model."""

    def __init__(self, model_bytes: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=model_bytes, num_threads=1)
        self._interpreter.allocate_tensors()
        self._in = self._interpreter.get_input_details()[0]
        self._out = self._interpreter.get_output_details()[0]
        self.input = _tensor_info(self._in)
        self.output = _tensor_info(self._out)

    def invoke_raw(self, sample: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._in["index"], sample[np.newaxis])
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._out["index"])[0])

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(raw outputs, dequantized outputs) for float inputs x (N, *shape)."""
        q = quantize(x, self.input)
        raw = np.stack([self.invoke_raw(s) for s in q])
        return raw, dequantize(raw, self.output)


def measure_latency(
    model_bytes: bytes, sample: np.ndarray, warmup_runs: int, runs: int
) -> VariantMeasurements:
    runner = LiteRtRunner(model_bytes)  # fresh interpreter: the first invoke is the cold one
    q = quantize(sample[np.newaxis], runner.input)[0]
    start = time.perf_counter_ns()
    runner.invoke_raw(q)
    first = (time.perf_counter_ns() - start) / 1000.0
    for _ in range(warmup_runs):
        runner.invoke_raw(q)
    timings = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        runner.invoke_raw(q)
        timings.append((time.perf_counter_ns() - start) / 1000.0)
    return VariantMeasurements(
        latency_warmup_us=round(first, 1),
        latency_steady_us=round(statistics.median(timings), 1),
        latency_runs=runs,
    )


def expected_output_range(float_calibration_outputs: np.ndarray) -> OutputRange:
    """Probabilities stay in [0, 1]; other outputs within the calibration range widened by half its span."""
    lo, hi = float(float_calibration_outputs.min()), float(float_calibration_outputs.max())
    if lo >= 0.0 and hi <= 1.0 + 1e-6:
        return OutputRange(low=0.0, high=1.0)
    span = max(hi - lo, 1e-6)
    return OutputRange(low=lo - span / 2, high=hi + span / 2)


def edge_case_inputs(calibration: np.ndarray) -> list[tuple[str, float]]:
    lo, hi = float(calibration.min()), float(calibration.max())
    return [
        ("zeros", 0.0),
        ("calibration_min", lo),
        ("calibration_max", hi),
        ("twice_calibration_max", 2.0 * hi),
    ]


def run_edge_cases(
    runner: LiteRtRunner,
    cases: list[tuple[str, float]],
    float_outputs: np.ndarray,
    expected: OutputRange,
    sample_shape: tuple[int, ...],
) -> list[EdgeCaseResult]:
    """float_outputs: the Keras model's outputs for the same cases, in order."""
    results = []
    tolerance = 1e-3 + 1e-3 * (expected.high - expected.low)
    for (name, value), reference in zip(cases, float_outputs, strict=True):
        x = np.full((1, *sample_shape), value, dtype=np.float32)
        _, y = runner.run(x)
        y = y[0]
        finite = bool(np.isfinite(y).all())
        results.append(
            EdgeCaseResult(
                name=name,
                fill_value=value,
                finite=finite,
                in_range=finite
                and bool(((y >= expected.low - tolerance) & (y <= expected.high + tolerance)).all()),
                top1_matches_float=bool(np.argmax(y) == np.argmax(reference)),
                max_abs_error=float(np.abs(y - reference).max()) if finite else None,
            )
        )
    return results
