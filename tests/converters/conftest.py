"""Session fixtures: one small digits classifier, trained once, converted once, shared by the tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass(frozen=True)
class Digits:
    x_train: np.ndarray
    y_train: np.ndarray
    calibration: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray


@pytest.fixture(scope="session")
def digits() -> Digits:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    y = data.target.astype(np.int64)
    return Digits(x_train=x[:1200], y_train=y[:1200], calibration=x[:200], x_eval=x[1200:], y_eval=y[1200:])


@pytest.fixture(scope="session")
def digits_model_path(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=5, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("models") / "digits.keras"
    model.save(path)
    return path


@dataclass(frozen=True)
class Converted:
    out_dir: Path
    report: object  # converters.report.ConversionReport
    stages: list[tuple[str, float]]


@pytest.fixture(scope="session")
def converted(digits: Digits, digits_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Converted:
    from converters.pipeline import convert_model

    out = tmp_path_factory.mktemp("conversions") / "digits-1.0.0"
    stages: list[tuple[str, float]] = []
    report = convert_model(
        digits_model_path,
        digits.calibration,
        digits.x_eval,
        digits.y_eval,
        name="digits",
        version="1.0.0",
        out_dir=out,
        progress=lambda stage, fraction: stages.append((stage, fraction)),
    )
    return Converted(out_dir=out, report=report, stages=stages)
