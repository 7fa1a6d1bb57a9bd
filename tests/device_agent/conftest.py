"""A real fallback chain for the agent tests: three tiny Keras models on sklearn digits, each converted by
the real pipeline (converters.pipeline.convert_model: LiteRT variants, measured TFLM arena, golden.npz).

Chain, most to least expensive: ``wide`` (a 3000-filter convolution whose 8x8x3000 int8 activation
alone exceeds a Cortex-M4F's 160 KiB model budget, so it is the "memory too small" case there and
fits an ESP32-S3 and the Pis), ``mlp``, ``linear``. The task's positive class is digit 0, as the
simulated digits board's events are.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Test-support modules of this folder (ota_support_loader) import by name under importlib mode.
_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

POSITIVE_DIGIT = 0


def _build_models() -> dict:
    import keras
    from keras import layers

    def wide(shape: tuple[int, ...]) -> keras.Model:
        inp = keras.Input(shape)
        x = layers.Conv2D(3000, 3, padding="same", activation="relu")(inp)
        x = layers.AveragePooling2D(pool_size=(8, 8))(x)
        x = layers.Flatten()(x)
        return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="wide")

    def mlp(shape: tuple[int, ...]) -> keras.Model:
        inp = keras.Input(shape)
        x = layers.Dense(32, activation="relu")(layers.Flatten()(inp))
        return keras.Model(inp, layers.Dense(10, activation="softmax")(x), name="mlp")

    def linear(shape: tuple[int, ...]) -> keras.Model:
        inp = keras.Input(shape)
        return keras.Model(inp, layers.Dense(10, activation="softmax")(layers.Flatten()(inp)), name="linear")

    return {"wide": (wide, 2), "mlp": (mlp, 15), "linear": (linear, 15)}


def build_test_chain(out: Path) -> Path:
    import keras

    from converters.config import ConversionConfig, TaskInfo
    from converters.pipeline import convert_model
    from converters.reference.chain import (
        ChainEntry,
        ChainMeasurements,
        ChainReport,
        EntryMeasurements,
        TaskMetadata,
    )
    from converters.reference.digits import load_digits_task

    data = load_digits_task(0)
    task = TaskInfo(
        class_names=list(data.class_names), positive_class_ids=[POSITIVE_DIGIT], score_threshold=0.5
    )
    config = ConversionConfig(latency_warmup_runs=1, latency_runs=5, tflm_eval_size=40, golden_size=16)
    entries = []
    for rank, (name, (build, epochs)) in enumerate(_build_models().items()):
        keras.utils.set_random_seed(rank)
        model = build(tuple(data.x_train.shape[1:]))
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=64, verbose=0)
        rep = convert_model(
            model,
            data.x_cal,
            data.x_eval,
            data.y_eval,
            name=f"digits_{name}",
            version="1.0.0",
            out_dir=out / name,
            config=config,
            task=task,
        )
        int8 = rep.variants["full_int8"]
        arena = rep.tflm.arena_bytes if rep.tflm else None
        entries.append(
            ChainEntry(
                rank=rank,
                name=name,
                description=name,
                artifact_dir=name,
                parameters=rep.model.parameters,
                float32_bytes=rep.variants["float32"].bytes,
                full_int8_bytes=int8.bytes,
                full_int8_latency_steady_us=int8.latency_steady_us,
                tflm_arena_bytes=arena,
                cost=float(3 - rank),
                float_accuracy=rep.model.float_accuracy,
                full_int8_accuracy=int8.accuracy,
                full_int8_delta_pp=int8.accuracy_delta_pp,
                full_int8_status=int8.status,
                full_int8_rejection_reason=int8.rejection_reason,
                tflm_accuracy=rep.tflm.accuracy if rep.tflm else None,
                default_variants={p: f.default_variant for p, f in rep.hardware_fit.items()},
                measurements=EntryMeasurements(
                    train_seconds=0.0, convert_seconds=0.0, stream_eval_seconds=0.0
                ),
            )
        )
    ChainReport(
        task="digits",
        version="1.0.0",
        seed=0,
        metadata=TaskMetadata(
            task="digits",
            class_names=list(data.class_names),
            positive_class_ids=[POSITIVE_DIGIT],
            score_threshold=0.5,
            input_shape=list(data.x_train.shape[1:]),
        ),
        entries=entries,
        measurements=ChainMeasurements(
            created_at=0.0, total_seconds=0.0, train_seconds=0.0, convert_seconds=0.0
        ),
    ).write(out)
    return out


@pytest.fixture(scope="session")
def chain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session. TINYFLEET_AGENT_TEST_CHAIN=<dir> reuses a chain built earlier (local runs)."""
    cached = os.environ.get("TINYFLEET_AGENT_TEST_CHAIN")
    if cached and (Path(cached) / "chain.json").is_file():
        return Path(cached)
    return build_test_chain(tmp_path_factory.mktemp("chain") / "digits")


@pytest.fixture
def flash_root(tmp_path: Path) -> Path:
    return tmp_path / "flash"


@pytest.fixture(scope="session")
def digits_eval() -> tuple[np.ndarray, np.ndarray]:
    from converters.reference.digits import load_digits_task

    data = load_digits_task(0)
    return data.x_eval, data.y_eval


@pytest.fixture(scope="session")
def ota_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1/v2/v3 converter outputs, built once per session (see _ota_client_support.session_models)."""
    from ota_support_loader import ota_client_support

    return ota_client_support().session_models(tmp_path_factory)
