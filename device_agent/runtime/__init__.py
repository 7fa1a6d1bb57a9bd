"""Runtime adapters: one interface (``Runtime``) over LiteRT (Pi class) and TFLite Micro (MCU class)."""

from __future__ import annotations

from device_agent.runtime.base import (
    Invocation,
    InvokeError,
    ModelDoesNotFit,
    ModelLoadError,
    Runtime,
    RuntimeFailure,
    TensorSpec,
)

__all__ = [
    "Invocation",
    "InvokeError",
    "ModelDoesNotFit",
    "ModelLoadError",
    "Runtime",
    "RuntimeFailure",
    "TensorSpec",
]
