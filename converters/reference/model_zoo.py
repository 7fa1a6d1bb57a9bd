"""Keras architectures of the two reference chains, from most to least expensive.

Only layers that convert to ops TFLite Micro implements: Conv2D, DepthwiseConv2D, Dense,
AveragePooling2D, MaxPooling2D, Flatten (Reshape), ReLU, Softmax. BatchNormalization folds into
the preceding convolution during conversion. Global pooling is spelled as AveragePooling2D over the
whole remaining map, because GlobalAveragePooling2D becomes MEAN, which is riskier on micro runtimes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import keras

TaskName = Literal["kws", "digits"]


@dataclass(frozen=True)
class ModelRecipe:
    name: str
    description: str
    build: Callable[[tuple[int, ...], int], keras.Model]
    epochs: int
    batch_size: int = 32
    learning_rate: float = 3e-3


def _ds_cnn(input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Depthwise-separable CNN (Zhang et al. 'Hello Edge'), narrowed to fit a Cortex-M4F."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.Conv2D(24, (5, 3), strides=(2, 2), padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for _ in range(3):
        x = layers.DepthwiseConv2D((3, 3), padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(24, (1, 1), use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.AveragePooling2D(pool_size=(int(x.shape[1]), int(x.shape[2])))(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="ds_cnn")


def _kws_small_cnn(input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.Conv2D(8, (3, 3), strides=(2, 2), padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Conv2D(16, (3, 3), padding="same", activation="relu")(x)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def _kws_tiny_mlp(input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Pools the spectrogram to a coarse 12 x 10 grid first: almost no arithmetic, little RAM."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.AveragePooling2D((4, 2))(inputs)
    x = layers.Flatten()(x)
    x = layers.Dense(32, activation="relu")(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny_mlp")


def _digits_cnn(input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, (3, 3), padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Conv2D(32, (3, 3), padding="same", activation="relu")(x)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def _digits_mlp(input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.Flatten()(inputs)
    x = layers.Dense(32, activation="relu")(x)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mlp")


def _digits_linear(input_shape: tuple[int, ...], n_classes: int) -> keras.Model:
    """Softmax regression: the cheapest model that still recognises digits."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.Flatten()(inputs)
    outputs = layers.Dense(n_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="linear")


RECIPES: dict[TaskName, tuple[ModelRecipe, ...]] = {
    "kws": (
        ModelRecipe(
            "ds_cnn", "depthwise-separable CNN, 4 blocks x 24 channels", _ds_cnn, epochs=20, batch_size=64
        ),
        # The small models take a higher starting rate: with cosine decay 3e-3 left them under-trained.
        ModelRecipe(
            "small_cnn",
            "2 conv (8, 16 ch) + max-pool + dense",
            _kws_small_cnn,
            epochs=30,
            batch_size=64,
            learning_rate=1e-2,
        ),
        ModelRecipe(
            "tiny_mlp",
            "4x2 average-pool, dense 32, dense",
            _kws_tiny_mlp,
            epochs=40,
            batch_size=64,
            learning_rate=1e-2,
        ),
    ),
    "digits": (
        ModelRecipe("small_cnn", "2 conv (16, 32 ch) + max-pool + dense", _digits_cnn, epochs=12),
        ModelRecipe("mlp", "dense 32 + dense", _digits_mlp, epochs=30),
        ModelRecipe("linear", "softmax regression", _digits_linear, epochs=40),
    ),
}


def recipes(task: TaskName) -> tuple[ModelRecipe, ...]:
    try:
        return RECIPES[task]
    except KeyError:
        raise ValueError(f"unknown reference task {task!r}; known: {', '.join(RECIPES)}") from None
