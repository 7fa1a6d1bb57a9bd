"""The one small interface every on-device interpreter sits behind, and the errors it raises.

A runtime takes float32 inputs and gives float32 scores whatever the model's tensor types are:
int8/uint8 I/O is quantized and dequantized here (scale and zero point from the model itself), so
the caller never sees the model's variant. ``invoke`` measures the interpreter call alone
(set input, invoke, get output) with ``time.perf_counter_ns``: that host time, times the hardware
profile's ``host_slowdown``, is what the simulated device spends.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class RuntimeFailure(Exception):
    """Base of everything a runtime raises; each message names the model and the problem."""


class ModelLoadError(RuntimeFailure):
    """The model bytes could not be read, parsed or allocated by the interpreter."""


class ModelDoesNotFit(ModelLoadError):
    """The model needs more RAM than the hardware class gives it ("memory too small").

    Raised *before* any interpreter is created: the TFLM Python interpreter segfaults the process
    when its arena is too small, so the agent never tries one.
    """

    def __init__(self, message: str, *, needed_bytes: int | None = None, budget_bytes: int | None = None):
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.budget_bytes = budget_bytes


class InvokeError(RuntimeFailure):
    """The interpreter failed on an input (wrong shape, interpreter error)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor as the model declares it (batch axis included)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float | None  # None: not quantized
    zero_point: int
    # Derived once here, not per invoke (the hot path of a device).
    quantized: bool = field(init=False)
    qmin: int = field(init=False)
    qmax: int = field(init=False)

    def __post_init__(self) -> None:
        quantized = self.scale is not None and np.issubdtype(self.dtype, np.integer)
        info = np.iinfo(self.dtype) if quantized else None
        object.__setattr__(self, "quantized", quantized)
        object.__setattr__(self, "qmin", int(info.min) if info else 0)
        object.__setattr__(self, "qmax", int(info.max) if info else 0)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


@dataclass(frozen=True)
class Invocation:
    """Scores for one input and how long the interpreter took on the host."""

    scores: np.ndarray  # float32, (classes,)
    invoke_ns: int

    @property
    def invoke_us(self) -> float:
        return self.invoke_ns / 1_000.0


def spec_from_details(details: dict) -> TensorSpec:
    """TensorSpec from a LiteRT or TFLM details dict (both carry ``quantization_parameters``)."""
    params = details.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), dtype=np.float64)
    zeros = np.asarray(params.get("zero_points", []), dtype=np.int64)
    dtype = np.dtype(details["dtype"])
    scale = float(scales[0]) if scales.size and scales[0] != 0 and np.issubdtype(dtype, np.integer) else None
    zero = int(zeros[0]) if zeros.size else 0
    return TensorSpec(tuple(int(d) for d in details["shape"]), dtype, scale, zero)


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float input -> the tensor's dtype (round to nearest, saturate), batch axis added."""
    if not spec.quantized:
        return np.asarray(x, dtype=spec.dtype).reshape(spec.shape)
    q = np.rint(np.asarray(x, dtype=np.float32) / np.float32(spec.scale)) + spec.zero_point
    return np.clip(q, spec.qmin, spec.qmax).astype(spec.dtype).reshape(spec.shape)


def dequantize(raw: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Raw output -> float32 scores, batch axis dropped."""
    if not spec.quantized:
        return np.asarray(raw, dtype=np.float32).reshape(-1)
    return ((raw.astype(np.float32) - np.float32(spec.zero_point)) * np.float32(spec.scale)).reshape(-1)


def read_model_bytes(model: bytes | bytearray | memoryview | str | Path) -> bytes:
    """Bytes of a .tflite flatbuffer given as bytes or a path; a clear error for anything else."""
    if isinstance(model, bytes | bytearray | memoryview):
        data = bytes(model)
        origin = "model bytes"
    elif isinstance(model, str | Path):
        try:
            data = Path(model).read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"{model}: cannot read model file ({exc.strerror or exc})") from exc
        origin = str(model)
    else:
        raise ModelLoadError(f"a model is bytes or a path, got {type(model).__name__}")
    # A TFLite flatbuffer carries the file identifier "TFL3" at offset 4.
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelLoadError(f"{origin}: not a TFLite model (no TFL3 identifier, {len(data)} bytes)")
    return data


class Runtime(ABC):
    """An interpreter holding one loaded model. Not thread-safe: one caller invokes at a time."""

    name: str = "runtime"

    @abstractmethod
    def load(self, model: bytes | str | Path) -> None:
        """Parse and allocate ``model``; raises ModelLoadError (or ModelDoesNotFit) and stays unloaded."""

    @property
    @abstractmethod
    def input_spec(self) -> TensorSpec: ...

    @property
    @abstractmethod
    def output_spec(self) -> TensorSpec: ...

    @abstractmethod
    def _run(self, x_raw: np.ndarray) -> np.ndarray:
        """Set the (already typed) input, invoke, return the raw output copy."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample, no batch axis."""
        return self.input_spec.shape[1:]

    def invoke(self, x: np.ndarray) -> Invocation:
        """Scores for one float32 sample shaped like ``input_shape`` (a leading batch axis of 1 is fine)."""
        arr = np.asarray(x)
        spec = self.input_spec
        if arr.shape != spec.shape and arr.shape != spec.shape[1:]:
            raise InvokeError(f"{self.name}: input of shape {arr.shape}, the model takes {spec.shape[1:]}")
        x_raw = quantize(arr, spec)
        t0 = time.perf_counter_ns()
        try:
            raw = self._run(x_raw)
        except Exception as exc:  # the interpreters raise RuntimeError/ValueError with their own text
            raise InvokeError(f"{self.name}: invoke failed: {exc}") from exc
        elapsed = time.perf_counter_ns() - t0
        return Invocation(dequantize(raw, self.output_spec), elapsed)
