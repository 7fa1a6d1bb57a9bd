"""Errors raised by the conversion pipeline. Every one names the problem in its message."""

from __future__ import annotations


class ConversionError(Exception):
    """Base class: the conversion did not produce an artifact directory (nothing was written)."""


class ModelLoadError(ConversionError):
    """The model is unreadable, not a Keras model, or not a single-input classifier."""


class CalibrationDataError(ConversionError):
    """Calibration data is empty, has the wrong shape or dtype for the model input, or is not finite."""


class EvaluationDataError(ConversionError):
    """Evaluation inputs or labels are empty, mis-shaped, mistyped, non-finite or out of range."""


class VariantBuildError(ConversionError):
    """The TFLite converter failed to build one of the variants."""


class UnsupportedOpError(ConversionError):
    """The full-int8 model needs operators that the TFLite Micro interpreter does not provide."""

    def __init__(self, ops: list[str], message: str | None = None) -> None:
        self.ops = list(ops)
        super().__init__(
            message
            or f"TFLite Micro lacks {len(self.ops)} operator(s) this model needs: {', '.join(self.ops)}"
        )


class NoHardwareFitError(ConversionError):
    """No variant of the model fits any of the hardware classes checked."""


class OutputExistsError(ConversionError):
    """The output directory exists and overwrite was not requested."""


class TflmProbeError(ConversionError):
    """The TFLite Micro probe worker failed in a way that is not a property of the model."""
