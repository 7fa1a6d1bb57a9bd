"""Seeded, deterministic short training of the reference models (Keras 3 on tensorflow-cpu)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from converters.reference.datasets import TaskData
from converters.reference.model_zoo import ModelRecipe

if TYPE_CHECKING:
    import keras

# oneDNN's fused CPU kernels change float rounding, hence trained weights; off unless the caller chose.
# Only effective when set before TensorFlow is first imported (this module imports it lazily).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


@dataclass(frozen=True)
class TrainedModel:
    recipe: ModelRecipe
    model: keras.Model
    float_accuracy: float
    train_seconds: float


def set_determinism(seed: int) -> None:
    """Same seed -> same weights: seeded initialisers and shuffling, deterministic TF kernels."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(recipe: ModelRecipe, data: TaskData, *, seed: int = 0) -> TrainedModel:
    import keras

    set_determinism(seed)
    started = time.perf_counter()
    model = recipe.build(data.input_shape, data.n_classes)
    # Cosine decay to zero: the short runs end in a settled minimum, which varied far less across seeds
    # and oneDNN on/off than a constant rate and kept full-int8 within 0.5 pp of float in our trials.
    steps = recipe.epochs * math.ceil(len(data.x_train) / recipe.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(recipe.learning_rate, steps)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        data.x_train,
        data.y_train,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        shuffle=True,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    probs = model.predict(data.x_eval, batch_size=256, verbose=0)
    accuracy = float(np.mean(np.argmax(probs, axis=1) == data.y_eval))
    return TrainedModel(recipe=recipe, model=model, float_accuracy=accuracy, train_seconds=seconds)
