"""Keras architectures of the two reference chains, from most to least expensive.

Only layers that convert to ops TFLite Micro implements: Conv2D, DepthwiseConv2D, Dense,
AveragePooling2D, MaxPooling2D, Flatten (Reshape), ReLU, Softmax. BatchNormalization folds into
the preceding convolution during conversion; Dropout acts only in training and is not converted.
Global pooling is spelled as AveragePooling2D over the whole remaining map, because
GlobalAveragePooling2D becomes MEAN, which is riskier on micro runtimes.
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
    """Depthwise-separable CNN (Zhang et al. 'Hello Edge' DS-CNN), ~28 k parameters.

    Sized like the DS-CNNs users deploy (Hello Edge DS-CNN-S ~24 k, MLPerf Tiny KWS ~38 k) while
    training in about a minute here: the first depthwise layer strides 2, so the three blocks run on
    13 x 5 positions (not 25 x 10) and the widening pointwise layers (64 -> 96 -> 128) hold the
    parameters. Depthwise layers have 9 weights per channel, so their per-channel quantization
    parameters (float32 scale + int64 zero point) cost more than their weights; most weights sit in
    the pointwise layers, where each output channel has 48-96 weights.
    """
    import keras
    from keras import layers

    def bn_relu(x: keras.KerasTensor) -> keras.KerasTensor:
        return layers.ReLU()(layers.BatchNormalization()(x))

    inputs = keras.Input(input_shape)
    x = bn_relu(layers.Conv2D(48, (10, 4), strides=(2, 2), padding="same", use_bias=False)(inputs))
    for channels, stride in ((64, 2), (96, 1), (128, 1)):
        x = bn_relu(layers.DepthwiseConv2D((3, 3), strides=stride, padding="same", use_bias=False)(x))
        x = bn_relu(layers.Conv2D(channels, (1, 1), use_bias=False)(x))
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
    """Small CNN, ~38 k parameters, most of them in the dense layer after the convolutions.

    A dense layer has hundreds of weights per output channel (512 here), so int8 shrinks it to
    about a quarter; convolutions with few input channels carry more quantization parameters per
    weight. Dropout (training only; it is not in the converted model) keeps the wide dense layer
    from overfitting the 1,257 training images.
    """
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, (3, 3), padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Conv2D(32, (3, 3), padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(64, activation="relu")(x)
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
            "ds_cnn",
            "DS-CNN: conv 10x4/2 48 ch, 3 x (depthwise 3x3 + pointwise 64/96/128 ch), average pool, dense",
            _ds_cnn,
            epochs=20,
            batch_size=64,
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
        ModelRecipe(
            "small_cnn", "2 conv (16, 32 ch), max-pool, dropout, dense 64, dense", _digits_cnn, epochs=20
        ),
        ModelRecipe("mlp", "dense 32 + dense", _digits_mlp, epochs=30),
        ModelRecipe("linear", "softmax regression", _digits_linear, epochs=40),
    ),
}


def recipes(task: TaskName) -> tuple[ModelRecipe, ...]:
    try:
        return RECIPES[task]
    except KeyError:
        raise ValueError(f"unknown reference task {task!r}; known: {', '.join(RECIPES)}") from None
