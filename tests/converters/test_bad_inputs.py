"""Every bad input gives a ConversionError subclass naming the problem, and leaves nothing behind."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from converters.config import ConversionConfig, TaskInfo
from converters.errors import (
    CalibrationDataError,
    ConversionError,
    EvaluationDataError,
    ModelLoadError,
    NoHardwareFitError,
    OutputExistsError,
    UnsupportedOpError,
)
from converters.pipeline import convert_model


def _convert(model, digits, out: Path, calibration=None, x=None, y=None, **kwargs):
    return convert_model(
        model,
        digits.calibration if calibration is None else calibration,
        digits.x_eval if x is None else x,
        digits.y_eval if y is None else y,
        name="t",
        version="1",
        out_dir=out,
        **kwargs,
    )


def leftovers(parent: Path, name: str) -> list[str]:
    """Entries in parent that a conversion to parent/name left behind (temporary or final)."""
    return sorted(p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}."))


def _assert_nothing_written(out: Path) -> None:
    assert leftovers(out.parent, out.name) == []


def _not_keras_files(tmp: Path) -> dict[str, Path]:
    tmp.mkdir(parents=True)
    text = tmp / "notes.keras"
    text.write_text("this is not a model")
    no_config = tmp / "empty.keras"
    with zipfile.ZipFile(no_config, "w") as z:
        z.writestr("metadata.json", "{}")
    broken = tmp / "broken.keras"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("config.json", "{not json")
        z.writestr("metadata.json", "{}")
    return {"missing": tmp / "nope.keras", "text": text, "no_config": no_config, "broken": broken, "dir": tmp}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "does not exist"),
        ("text", "not a zip"),
        ("no_config", "no config.json"),
        ("broken", "could not load"),
        ("dir", "not a file"),
    ],
)
def test_unreadable_model(case: str, message: str, digits, tmp_path: Path) -> None:
    files = _not_keras_files(tmp_path / "in")
    out = tmp_path / "out" / "m"
    with pytest.raises(ModelLoadError, match=message):
        _convert(files[case], digits, out)
    _assert_nothing_written(out)


@pytest.fixture()
def keras_model_obj(digits_model_path: Path):
    import keras

    return keras.saving.load_model(digits_model_path, compile=False)


def _bad_calibration(digits) -> dict[str, tuple[np.ndarray, str]]:
    c = digits.calibration
    nan = c.copy()
    nan[3, 0, 0, 0] = np.nan
    inf = c.copy()
    inf[5, 1, 1, 0] = np.inf
    return {
        "float64": (c.astype(np.float64), "dtype float32"),
        "int": (c.astype(np.int32), "dtype float32"),
        "wrong_shape": (c.reshape(-1, 64), r"shape \(200, 64\)"),
        "wrong_sample_shape": (c[:, :7], r"the model needs \(N, 8, 8, 1\)"),
        "empty": (c[:0], "empty"),
        "nan": (nan, "NaN in 1 sample"),
        "inf": (inf, "inf in 1 sample"),
        "list": (c.tolist(), "numpy array"),
    }


@pytest.mark.parametrize(
    "case", ["float64", "int", "wrong_shape", "wrong_sample_shape", "empty", "nan", "inf", "list"]
)
def test_bad_calibration(case: str, digits, keras_model_obj, tmp_path: Path) -> None:
    data, message = _bad_calibration(digits)[case]
    out = tmp_path / "m"
    with pytest.raises(CalibrationDataError, match=message):
        _convert(keras_model_obj, digits, out, calibration=data)
    _assert_nothing_written(out)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("x_shape", "evaluation inputs has shape"),
        ("x_nan", "evaluation inputs contains NaN"),
        ("y_float", "integer class ids"),
        ("y_length", "expected"),
        ("y_range", r"must be in 0\.\.9"),
        ("y_negative", r"must be in 0\.\.9"),
    ],
)
def test_bad_evaluation(case: str, message: str, digits, keras_model_obj, tmp_path: Path) -> None:
    x, y = digits.x_eval, digits.y_eval
    if case == "x_shape":
        x = x[:, :, :, 0]
    elif case == "x_nan":
        x = x.copy()
        x[0, 0, 0, 0] = np.nan
    elif case == "y_float":
        y = y.astype(np.float32)
    elif case == "y_length":
        y = y[:-1]
    elif case == "y_range":
        y = y.copy()
        y[0] = 10
    elif case == "y_negative":
        y = y.copy()
        y[0] = -1
    out = tmp_path / "m"
    with pytest.raises(EvaluationDataError, match=message):
        _convert(keras_model_obj, digits, out, x=x, y=y)
    _assert_nothing_written(out)


def test_task_must_match_model_classes(digits, keras_model_obj, tmp_path: Path) -> None:
    out = tmp_path / "m"
    with pytest.raises(ConversionError, match="3 classes but the model outputs 10"):
        _convert(keras_model_obj, digits, out, task=TaskInfo(class_names=["a", "b", "c"]))
    _assert_nothing_written(out)


def test_non_classifier_model_rejected(digits, tmp_path: Path) -> None:
    import keras

    regressor = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(ModelLoadError, match="not \\(batch, classes\\)"):
        _convert(regressor, digits, tmp_path / "m")


def test_existing_output_is_kept(digits, keras_model_obj, tmp_path: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        _convert(keras_model_obj, digits, out)
    assert (out / "keep.txt").read_text() == "precious"
    assert leftovers(tmp_path, "m") == ["m"]


def test_op_tflm_lacks_is_named_and_nothing_written(digits, tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inp)
    h = keras.layers.Dense(8)(h)
    h = keras.layers.Lambda(lambda t: tf.tile(t, [1, 2]))(h)  # TILE: a TFLite builtin TFLM lacks
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    out = tmp_path / "m"
    with pytest.raises(UnsupportedOpError, match="TILE") as info:
        _convert(model, digits, out, config=ConversionConfig(variants=("full_int8",)))
    assert info.value.ops == ["TILE"]
    _assert_nothing_written(out)
    # Without MCU classes the same model converts; the report still names the op TFLM lacks.
    report = _convert(
        model, digits, out, config=ConversionConfig(variants=("full_int8",), profiles=("pi-zero-2w", "pi-4"))
    )
    assert report.tflm.unsupported_ops == ["TILE"]
    assert report.tflm.arena_bytes is None
    assert set(report.hardware_fit) == {"pi-zero-2w", "pi-4"}


def test_model_too_large_for_every_class_checked(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    # ~2.4 M int8 weights: above the ESP32-S3 slot (2 MiB) and the Cortex-M4F slot (384 KiB).
    model = keras.Sequential(
        [keras.Input((1024,)), keras.layers.Dense(2304), keras.layers.Dense(4, activation="softmax")]
    )
    rng = np.random.default_rng(0)
    x = rng.random((16, 1024), dtype=np.float32)
    y = rng.integers(0, 4, 16)
    out = tmp_path / "big"
    config = ConversionConfig(variants=("full_int8",), profiles=("cortex-m4f", "esp32-s3"), tflm_eval_size=4)
    with pytest.raises(NoHardwareFitError, match=r"full_int8: flash \d+ B") as info:
        convert_model(model, x, x, y, name="big", version="1", out_dir=out, config=config)
    assert "esp32-s3: flash 2097152 B" in str(info.value)
    _assert_nothing_written(out)


def test_op_without_tflite_kernel_is_named(digits, tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    from converters.errors import VariantBuildError

    inp = keras.Input((8, 8, 1))
    h = keras.layers.Lambda(lambda t: tf.math.erf(t))(keras.layers.Flatten()(inp))
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))
    out = tmp_path / "m"
    with pytest.raises(VariantBuildError, match=r"float32.*Erf"):
        _convert(model, digits, out)
    _assert_nothing_written(out)
