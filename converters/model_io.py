"""Loading the Keras model, checking the data against it, and storing a byte-stable copy of it.

TensorFlow/Keras are imported inside the functions: importing `converters` stays cheap.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converters.errors import CalibrationDataError, EvaluationDataError, ModelLoadError

if TYPE_CHECKING:
    import keras

# Keras writes the save time into metadata.json and the zip entry times; a fixed value keeps
# model.keras byte-identical between runs (Keras ignores the field when loading).
_FIXED_DATE_SAVED = "1980-01-01@00:00:00"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def load_model(model: Any) -> keras.Model:
    """An in-memory keras.Model as is, or a .keras file loaded without compiling."""
    import keras

    if isinstance(model, keras.Model):
        _check_classifier(model)
        return model
    if not isinstance(model, str | os.PathLike):
        raise ModelLoadError(
            f"model must be a keras.Model or a path to a .keras file, not {type(model).__name__}"
        )
    path = Path(model)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist or is not a file")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path} is not a Keras .keras file (not a zip archive)")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    if "config.json" not in names:
        raise ModelLoadError(f"{path} is not a Keras .keras file (no config.json inside)")
    try:
        loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        raise ModelLoadError(f"could not load Keras model {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, keras.Model):
        raise ModelLoadError(f"{path} holds a {type(loaded).__name__}, not a keras.Model")
    _check_classifier(loaded)
    return loaded


def _check_classifier(model: keras.Model) -> None:
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError) as exc:
        raise ModelLoadError(f"model {model.name!r} is not built (no defined inputs): {exc}") from exc
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(
            f"model {model.name!r} must have one input and one output, has {len(inputs)} and {len(outputs)}"
        )
    in_shape, out_shape = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if any(d is None for d in in_shape[1:]):
        raise ModelLoadError(f"model input shape {in_shape} must be fixed apart from the batch dimension")
    if len(out_shape) != 2 or out_shape[1] is None or out_shape[1] < 2:
        raise ModelLoadError(f"model output shape {out_shape} is not (batch, classes) with 2+ classes")


def input_shape(model: keras.Model) -> tuple[int, ...]:
    return tuple(int(d) for d in model.inputs[0].shape[1:])


def num_classes(model: keras.Model) -> int:
    return int(model.outputs[0].shape[1])


def _check_inputs(x: Any, shape: tuple[int, ...], what: str, error: type[Exception]) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise error(f"{what} must be a numpy array, not {type(x).__name__}")
    if x.dtype != np.float32:
        raise error(f"{what} must have dtype float32 like the model input, not {x.dtype}")
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise error(f"{what} has shape {x.shape}; the model needs (N, {', '.join(map(str, shape))})")
    if x.shape[0] == 0:
        raise error(f"{what} is empty (0 samples)")
    bad = ~np.isfinite(x)
    if bad.any():
        kinds = [k for k, m in (("NaN", np.isnan(x)), ("inf", np.isinf(x))) if m.any()]
        raise error(
            f"{what} contains {' and '.join(kinds)} in {int(bad.reshape(len(x), -1).any(1).sum())} sample(s)"
        )
    return x


def check_calibration(x: Any, shape: tuple[int, ...]) -> np.ndarray:
    return _check_inputs(x, shape, "calibration data", CalibrationDataError)


def check_evaluation(x: Any, y: Any, shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    x = _check_inputs(x, shape, "evaluation inputs", EvaluationDataError)
    if not isinstance(y, np.ndarray):
        raise EvaluationDataError(f"evaluation labels must be a numpy array, not {type(y).__name__}")
    if not np.issubdtype(y.dtype, np.integer):
        raise EvaluationDataError(f"evaluation labels must be integer class ids, not dtype {y.dtype}")
    if y.shape != (x.shape[0],):
        raise EvaluationDataError(
            f"evaluation labels have shape {y.shape}; expected ({x.shape[0]},) to match inputs"
        )
    if y.min() < 0 or y.max() >= classes:
        raise EvaluationDataError(
            f"evaluation labels must be in 0..{classes - 1}, found {y.min()}..{y.max()}"
        )
    return x, y.astype(np.int64)


def stable_keras_bytes(model: keras.Model, source: Any) -> bytes:
    """The .keras file to store: the source file's exact bytes, or the in-memory model saved, normalised."""
    if isinstance(source, str | os.PathLike):
        return Path(source).read_bytes()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return _normalise_keras_zip(path.read_bytes())


def _normalise_keras_zip(raw: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in sorted(src.namelist()):
            data = src.read(name)
            if name == "metadata.json":
                meta = json.loads(data)
                meta["date_saved"] = _FIXED_DATE_SAVED
                data = json.dumps(meta, sort_keys=True).encode()
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            dst.writestr(info, data)
    return out.getvalue()
