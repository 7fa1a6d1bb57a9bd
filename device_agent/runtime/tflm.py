"""The real TensorFlow Lite Micro interpreter, for MCU-class devices simulated on the host.

The arena is capped at the hardware profile's ``model_ram_budget_bytes`` minus the I/O buffers.
The tflite-micro Python interpreter prints "Failed to allocate tail memory" and then *segfaults the
process* when the arena is too small, so this adapter never tries one: it needs the converter's
measured arena (report.json ``tflm.arena_bytes``) and raises :class:`ModelDoesNotFit` before creating
an interpreter when that arena plus I/O exceeds the budget, or when no arena was measured at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from device_agent.runtime.base import (
    ModelDoesNotFit,
    ModelLoadError,
    Runtime,
    TensorSpec,
    read_model_bytes,
    spec_from_details,
)

# Slack over the measured minimum arena: alignment of the host buffer may differ from the probe's.
ARENA_MARGIN_FRACTION = 0.25
ARENA_MARGIN_MIN_BYTES = 1024


def arena_for(measured_arena_bytes: int, io_bytes: int, budget_bytes: int) -> int:
    """The arena to give TFLM: measured + margin, capped at what the budget leaves after I/O.

    Raises ModelDoesNotFit when even the measured minimum plus I/O exceeds the budget.
    """
    needed = measured_arena_bytes + io_bytes
    if needed > budget_bytes:
        raise ModelDoesNotFit(
            f"tflm: model needs {needed} B (arena {measured_arena_bytes} + I/O {io_bytes}), "
            f"RAM budget is {budget_bytes} B",
            needed_bytes=needed,
            budget_bytes=budget_bytes,
        )
    margin = max(ARENA_MARGIN_MIN_BYTES, int(measured_arena_bytes * ARENA_MARGIN_FRACTION))
    return min(measured_arena_bytes + margin, budget_bytes - io_bytes)


class TflmRuntime(Runtime):
    name = "tflm"

    def __init__(self, *, ram_budget_bytes: int) -> None:
        if ram_budget_bytes <= 0:
            raise ValueError(f"ram_budget_bytes must be > 0, got {ram_budget_bytes}")
        self._budget = ram_budget_bytes
        self._interp: Any = None
        self._in: TensorSpec | None = None
        self._out: TensorSpec | None = None
        self.arena_bytes: int | None = None

    def load(self, model: bytes | str | Path, *, arena_bytes: int | None = None, io_bytes: int = 0) -> None:
        """Load ``model`` with the converter's measured ``arena_bytes`` (required) and I/O bytes."""
        data = read_model_bytes(model)
        if arena_bytes is None:
            raise ModelDoesNotFit(
                "tflm: the model has no measured arena (report.json tflm.arena_bytes); "
                "refusing to guess, a too-small arena crashes the interpreter",
                budget_bytes=self._budget,
            )
        if isinstance(arena_bytes, bool) or not isinstance(arena_bytes, int) or arena_bytes <= 0:
            raise ModelLoadError(f"tflm: arena_bytes must be a positive integer, got {arena_bytes!r}")
        arena = arena_for(arena_bytes, io_bytes, self._budget)
        from tflite_micro.python.tflite_micro import runtime as tflm_runtime

        try:
            interp = tflm_runtime.Interpreter.from_bytes(data, arena_size=arena)
            in_details = interp.get_input_details(0)
            out_details = interp.get_output_details(0)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"tflm: cannot load model: {exc}") from exc
        self._in = spec_from_details(in_details)
        self._out = spec_from_details(out_details)
        self._interp = interp
        self.arena_bytes = arena

    @property
    def input_spec(self) -> TensorSpec:
        if self._in is None:
            raise ModelLoadError("tflm: no model loaded")
        return self._in

    @property
    def output_spec(self) -> TensorSpec:
        if self._out is None:
            raise ModelLoadError("tflm: no model loaded")
        return self._out

    def _run(self, x_raw: np.ndarray) -> np.ndarray:
        interp = self._interp
        interp.set_input(x_raw, 0)
        interp.invoke()
        return np.array(interp.get_output(0), copy=True)
