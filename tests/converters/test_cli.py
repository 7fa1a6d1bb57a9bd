"""`tinyfleet model convert`: bad input -> exit 2 with one clear line; success -> summary table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fleet_server.cli.main import app

runner = CliRunner()


@pytest.fixture()
def files(digits, digits_model_path: Path, tmp_path: Path) -> dict[str, Path]:
    np.save(tmp_path / "calibration.npy", digits.calibration)
    np.savez(tmp_path / "eval.npz", x=digits.x_eval, y=digits.y_eval)
    np.save(tmp_path / "eval_x.npy", digits.x_eval)
    np.save(tmp_path / "eval_y.npy", digits.y_eval)
    np.save(tmp_path / "wrong_shape.npy", digits.calibration.reshape(-1, 64))
    np.savez(tmp_path / "wrong_keys.npz", a=digits.x_eval, b=digits.y_eval)
    (tmp_path / "garbage.npy").write_bytes(b"not numpy")
    (tmp_path / "text.keras").write_text("hello")
    return {
        "model": digits_model_path,
        "calibration": tmp_path / "calibration.npy",
        "eval": tmp_path / "eval.npz",
        "eval_x": tmp_path / "eval_x.npy",
        "eval_y": tmp_path / "eval_y.npy",
        "wrong_shape": tmp_path / "wrong_shape.npy",
        "wrong_keys": tmp_path / "wrong_keys.npz",
        "garbage": tmp_path / "garbage.npy",
        "text_model": tmp_path / "text.keras",
        "out": tmp_path / "out",
    }


def _args(f: dict[str, Path], **override: str | None) -> list[str]:
    values = {
        "model": str(f["model"]),
        "--calibration": str(f["calibration"]),
        "--eval": str(f["eval"]),
        "--name": "digits",
        "--version": "1.0.0",
        "--out": str(f["out"]),
    }
    values.update(override)
    args = ["model", "convert", values.pop("model")]
    for key, value in values.items():
        if value is not None:
            args += [key, value]
    return args


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"model": "/nonexistent/m.keras"}, "model file /nonexistent/m.keras does not exist"),
        ({"model": "text_model"}, "not a Keras .keras file"),
        ({"--calibration": "/nonexistent/c.npy"}, "calibration file /nonexistent/c.npy does not exist"),
        ({"--calibration": "garbage"}, "is not a .npy/.npz file"),
        ({"--calibration": "wrong_shape"}, "calibration data has shape (200, 64)"),
        ({"--eval": "wrong_keys"}, "must be an .npz with arrays 'x' and 'y'"),
        ({"--eval": None}, "evaluation data missing"),
        ({"--max-drop-pp": "-1"}, "invalid option"),
        ({"--profiles": "cray-1"}, "unknown hardware profiles"),
        ({"--class-names": "a,b,c"}, "task names 3 classes but the model outputs 10"),
        ({"--positive-classes": "1"}, "--positive-classes needs --class-names"),
        ({"--class-names": ",".join("0123456789"), "--positive-classes": "x"}, "invalid option"),
    ],
)
def test_bad_input_exits_2_with_one_line(files, override: dict[str, str | None], message: str) -> None:
    resolved = {k: (str(files[v]) if v in files else v) for k, v in override.items()}
    result = runner.invoke(app, _args(files, **resolved))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert message in text
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3  # one message (Rich may wrap a long path)
    assert not files["out"].exists()


def test_existing_output_exits_2(files) -> None:
    files["out"].mkdir()
    result = runner.invoke(app, _args(files))
    assert result.exit_code == 2
    assert "already exists" in result.output


def test_convert_with_separate_eval_files_prints_summary(files) -> None:
    result = runner.invoke(
        app,
        _args(files, **{"--eval": None, "--eval-x": str(files["eval_x"]), "--eval-y": str(files["eval_y"])}),
    )
    assert result.exit_code == 0, result.output
    for variant in ("float32", "float16", "dynamic_int8", "full_int8"):
        assert variant in result.output
    assert "TFLM: arena" in result.output
    assert (files["out"] / "report.json").is_file()


def test_model_fitting_no_checked_class_exits_1(digits, tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    # ~520 k weights: even full_int8 (~0.5 MB) exceeds the Cortex-M4F slot of 384 KiB.
    model = keras.Sequential(
        [keras.Input((512,)), keras.layers.Dense(1024), keras.layers.Dense(3, activation="softmax")]
    )
    model.save(tmp_path / "wide.keras")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "cal.npy", rng.random((8, 512), dtype=np.float32))
    np.savez(tmp_path / "ev.npz", x=rng.random((8, 512), dtype=np.float32), y=rng.integers(0, 3, 8))
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            *("model", "convert", str(tmp_path / "wide.keras")),
            *("--calibration", str(tmp_path / "cal.npy"), "--eval", str(tmp_path / "ev.npz")),
            *("--name", "wide", "--version", "1", "--out", str(out), "--profiles", "cortex-m4f"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "NoHardwareFitError" in result.output and "cortex-m4f: flash 393216 B" in result.output
    assert not out.exists()
