"""Cheap checks of an upload before anything is stored or queued (no TensorFlow here).

What is checked: the model file is a zip holding a Keras ``config.json``; the arrays load without
pickle, are float32, finite, non-empty and agree with each other (and with the model's declared input
shape when its config names one); labels are integer class ids matching the inputs and, with task
class names, inside their range. Everything deeper (loading the model, output classes) is the job's.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleet_server.catalog.errors import InvalidUpload
from fleet_server.catalog.inputs import CALIBRATION_KEYS, InputFileError, load_array, load_evaluation

ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class CheckedUpload:
    input_shape: tuple[int, ...]  # one sample, from the calibration data
    calibration_samples: int
    evaluation_samples: int
    declared_input_shape: tuple[int, ...] | None  # from the model's config.json, when found


def check_upload(
    model_path: Path, calibration_path: Path, evaluation_path: Path, num_task_classes: int | None
) -> CheckedUpload:
    declared = _check_keras_file(model_path)
    try:
        calibration = load_array(calibration_path, "calibration", CALIBRATION_KEYS)
        x, y = load_evaluation(evaluation_path)
    except InputFileError as exc:
        raise InvalidUpload(_without_paths(str(exc), calibration_path, evaluation_path)) from None
    _check_inputs(calibration, "calibration data")
    _check_inputs(x, "evaluation inputs")
    if calibration.shape[1:] != x.shape[1:]:
        raise InvalidUpload(
            f"calibration samples have shape {calibration.shape[1:]} but evaluation inputs "
            f"{x.shape[1:]}: both must match the model input"
        )
    if declared is not None and tuple(calibration.shape[1:]) != declared:
        raise InvalidUpload(
            f"the model input is {declared} per sample but the data is {tuple(calibration.shape[1:])}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise InvalidUpload(f"evaluation labels 'y' must be integer class ids, not dtype {y.dtype}")
    if y.shape != (x.shape[0],):
        raise InvalidUpload(f"evaluation labels have shape {y.shape}; expected ({x.shape[0]},) to match 'x'")
    if y.min() < 0:
        raise InvalidUpload(f"evaluation labels must be class ids >= 0, found {y.min()}")
    if num_task_classes is not None and y.max() >= num_task_classes:
        raise InvalidUpload(
            f"evaluation labels go up to {y.max()} but the task names {num_task_classes} classes"
        )
    return CheckedUpload(
        input_shape=tuple(int(d) for d in calibration.shape[1:]),
        calibration_samples=int(calibration.shape[0]),
        evaluation_samples=int(x.shape[0]),
        declared_input_shape=declared,
    )


def _without_paths(message: str, *paths: Path) -> str:
    # Staging paths are server internals; the operator knows the files by their form field.
    for path, name in zip(paths, ("calibration", "evaluation"), strict=True):
        message = message.replace(f" {path}", "").replace(str(path), name)
    return message


def _check_inputs(x: np.ndarray, what: str) -> None:
    if x.dtype != np.float32:
        raise InvalidUpload(f"{what} must have dtype float32, not {x.dtype}")
    if x.ndim < 2:
        raise InvalidUpload(f"{what} has shape {x.shape}; expected (samples, ...) with at least 2 dimensions")
    if x.shape[0] == 0:
        raise InvalidUpload(f"{what} is empty (0 samples)")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x.reshape(len(x), -1))).any(1).sum())
        raise InvalidUpload(f"{what} contains NaN or inf in {bad} sample(s)")


def _check_keras_file(path: Path) -> tuple[int, ...] | None:
    with path.open("rb") as f:
        head = f.read(4)
    if head != ZIP_MAGIC:
        raise InvalidUpload("model file is not a Keras .keras file (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise InvalidUpload("model file is not a Keras .keras file (no config.json inside)")
            if archive.getinfo("config.json").file_size > 16 * 1024 * 1024:
                raise InvalidUpload("model file's config.json is implausibly large")
            config = json.loads(archive.read("config.json"))
    except InvalidUpload:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as exc:
        raise InvalidUpload(f"model file is a corrupted zip archive: {exc}") from None
    return _declared_input_shape(config)


def _declared_input_shape(config: Any) -> tuple[int, ...] | None:
    """The one InputLayer's batch_shape without the batch dimension, if the config states it plainly."""
    shapes: list[tuple[int, ...]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("class_name") == "InputLayer" and isinstance(node.get("config"), dict):
                shape = node["config"].get("batch_shape") or node["config"].get("batch_input_shape")
                if isinstance(shape, list) and shape and all(isinstance(d, int) for d in shape[1:]):
                    shapes.append(tuple(shape[1:]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return shapes[0] if len(set(shapes)) == 1 else None
