"""LiteRT adapter for Pi-class devices (``ai_edge_litert``; ``tflite_runtime`` where that is installed).

Never TensorFlow: both packages ship the interpreter alone. One thread, as on a Pi Zero the agent
shares four small cores with the OS and the radio stack; ``num_threads`` can be raised on a Pi 4.
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


def interpreter_class() -> Any:
    """The installed LiteRT interpreter class: ai_edge_litert first, tflite_runtime otherwise."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError as exc:
            raise ModelLoadError(
                "no LiteRT interpreter installed: pip install ai-edge-litert (or tflite-runtime)"
            ) from exc
    return Interpreter


class LiteRTRuntime(Runtime):
    name = "litert"

    def __init__(self, *, num_threads: int = 1, ram_budget_bytes: int | None = None) -> None:
        self._num_threads = num_threads
        self._ram_budget = ram_budget_bytes
        self._interp: Any = None
        self._in: TensorSpec | None = None
        self._out: TensorSpec | None = None

    def load(self, model: bytes | str | Path, *, ram_bytes: int | None = None) -> None:
        """Load ``model``; ``ram_bytes`` (the report's tensor RAM) is checked against the budget first."""
        data = read_model_bytes(model)
        if (
            self._ram_budget is not None
            and ram_bytes is not None
            and ram_bytes + len(data) > self._ram_budget
        ):
            raise ModelDoesNotFit(
                f"litert: model needs {ram_bytes + len(data)} B (tensors {ram_bytes} + model {len(data)}), "
                f"budget is {self._ram_budget} B",
                needed_bytes=ram_bytes + len(data),
                budget_bytes=self._ram_budget,
            )
        cls = interpreter_class()
        try:
            interp = cls(model_content=data, num_threads=self._num_threads)
            interp.allocate_tensors()
            in_details = interp.get_input_details()
            out_details = interp.get_output_details()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"litert: cannot load model: {exc}") from exc
        if len(in_details) != 1 or len(out_details) != 1:
            raise ModelLoadError(
                f"litert: the agent runs single-input single-output classifiers, model has "
                f"{len(in_details)} inputs and {len(out_details)} outputs"
            )
        self._in_index = int(in_details[0]["index"])
        self._out_index = int(out_details[0]["index"])
        self._in = spec_from_details(in_details[0])
        self._out = spec_from_details(out_details[0])
        self._interp = interp

    def _loaded(self) -> Any:
        if self._interp is None:
            raise ModelLoadError("litert: no model loaded")
        return self._interp

    @property
    def input_spec(self) -> TensorSpec:
        self._loaded()
        assert self._in is not None
        return self._in

    @property
    def output_spec(self) -> TensorSpec:
        self._loaded()
        assert self._out is not None
        return self._out

    def _run(self, x_raw: np.ndarray) -> np.ndarray:
        interp = self._interp
        interp.set_tensor(self._in_index, x_raw)
        interp.invoke()
        return interp.get_tensor(self._out_index)
