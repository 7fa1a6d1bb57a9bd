"""Build the four TFLite variants of a Keras model with the TFLite converter.

Keras 3 models go through `tf.lite.TFLiteConverter.from_keras_model` (it exports a SavedModel
internally; checked against TF 2.21 / Keras 3.15).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from converters.config import VariantName
from converters.errors import VariantBuildError

if TYPE_CHECKING:
    import keras


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporter prints "Saved artifact at ..." on stdout; keep stdout clean for JSON callers.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def build_variant(model: keras.Model, variant: VariantName, calibration: np.ndarray) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "full_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]

        def representative() -> Iterator[list[np.ndarray]]:
            for i in range(calibration.shape[0]):  # fixed order: the calibration is deterministic
                yield [calibration[i : i + 1]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif variant != "float32":
        raise ValueError(f"unknown variant {variant!r}")
    try:
        with _quiet():
            return bytes(converter.convert())
    except Exception as exc:
        text = str(exc).strip()
        select = re.search(r"TF Select ops: ([^\n]+)", text)
        detail = (
            f"ops without a TFLite builtin kernel: {select.group(1)}"
            if select
            else (text.splitlines()[0][:300] if text else type(exc).__name__)
        )
        raise VariantBuildError(f"TFLite converter failed for variant {variant}: {detail}") from exc
