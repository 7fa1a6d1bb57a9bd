"""Drift baselines: a cheap input summary and histograms the device reproduces bin for bin.

Numpy only (no TensorFlow): the device agent imports this module to count its own inputs into the
exact bins the converter wrote.

Input summary (``feature_summary``): trailing size-1 axes of one sample are dropped; the last
remaining axis is the *feature axis* (columns of an image, frequency bins of a spectrogram, channels
of an RGB image, elements of a vector). Its positions are split into at most ``max_features``
contiguous groups of near-equal size; feature i is the mean of the sample over group i and over all
other axes. That costs one pass over the input and yields a handful of numbers per inference.

Histograms: edges are the calibration quantiles (deciles for 10 bins), duplicates removed, so each bin
holds about the same share of calibration data (what PSI needs). The outer bins are open-ended:
values below the first edge count in bin 0, values above the last edge in the last bin.
Output score: the maximum softmax score, or the highest positive-class score when the task names
positive classes; its histogram has uniform edges on [0, 1]. A model that outputs logits gets a
softmax first (``apply_softmax`` in the spec) so the score is always a probability.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

# The report models are imported where they are built: feature_summary runs on the device agent, which
# cannot afford pydantic (the report's models), and only reads the spec's attributes.
if TYPE_CHECKING:
    from converters.report import BaselineFeatureSpec, Histogram, OutputScoreSpec


def make_feature_spec(
    input_shape: tuple[int, ...] | list[int], max_features: int = 16
) -> BaselineFeatureSpec:
    shape = [int(d) for d in input_shape]
    if not shape:
        raise ValueError("input shape must have at least one axis")
    axis = len(shape) - 1
    while axis > 0 and shape[axis] == 1:
        axis -= 1
    n = shape[axis]
    k = min(n, max_features)
    bounds = [round(i * n / k) for i in range(k + 1)]
    from converters.report import BaselineFeatureSpec

    return BaselineFeatureSpec(
        input_shape=shape,
        axis=axis,
        group_bounds=bounds,
        description=(
            f"{k} features: mean over all other axes of contiguous groups of axis {axis} "
            f"(size {n}) of each {tuple(shape)} sample"
        ),
    )


def feature_summary(x: np.ndarray, spec: BaselineFeatureSpec) -> np.ndarray:
    """(N, k) float64 features for a batch (N, *input_shape), or (k,) for a single sample."""
    shape = tuple(spec.input_shape)
    arr = np.asarray(x, dtype=np.float64)
    single = arr.shape == shape
    if single:
        arr = arr[np.newaxis]
    if arr.shape[1:] != shape:
        raise ValueError(f"expected samples of shape {shape}, got array of shape {np.shape(x)}")
    moved = np.moveaxis(arr, 1 + spec.axis, -1).reshape(arr.shape[0], -1, shape[spec.axis])
    per_position = moved.mean(axis=1)  # (N, axis size)
    bounds = np.asarray(spec.group_bounds)
    sums = np.add.reduceat(per_position, bounds[:-1], axis=1)
    features = sums / np.diff(bounds)
    return features[0] if single else features


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    values = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)))
    if edges.size < 2:  # constant feature: one bin around the value
        v = float(edges[0]) if edges.size else 0.0
        edges = np.array([v - 0.5, v + 0.5])
    return [float(e) for e in edges]


def bin_counts(values: np.ndarray, edges: list[float] | np.ndarray) -> np.ndarray:
    """Counts of `values` per bin; outer bins are open-ended (see module docstring)."""
    e = np.asarray(edges, dtype=np.float64)
    bins = e.size - 1
    idx = np.searchsorted(e[1:-1], np.asarray(values, dtype=np.float64), side="right")
    return np.bincount(np.clip(idx, 0, bins - 1), minlength=bins).astype(np.int64)


def histogram(name: str, values: np.ndarray, edges: list[float]) -> Histogram:
    counts = bin_counts(values, edges)
    total = max(int(counts.sum()), 1)
    from converters.report import Histogram

    return Histogram(
        name=name,
        edges=edges,
        counts=[int(c) for c in counts],
        fractions=[float(c) / total for c in counts],
    )


def looks_like_probabilities(outputs: np.ndarray) -> bool:
    """True when every row is in [0, 1] and sums to 1 (a softmax head); False for logits."""
    o = np.asarray(outputs, dtype=np.float64)
    return bool(o.min() >= -1e-6 and o.max() <= 1 + 1e-6 and np.allclose(o.sum(axis=-1), 1.0, atol=1e-3))


def make_output_score_spec(
    num_classes: int, positive_class_ids: list[int] | None, apply_softmax: bool = False
) -> OutputScoreSpec:
    from converters.report import OutputScoreSpec

    if positive_class_ids:
        return OutputScoreSpec(
            kind="positive_class_max", class_ids=sorted(positive_class_ids), apply_softmax=apply_softmax
        )
    return OutputScoreSpec(
        kind="max_softmax", class_ids=list(range(num_classes)), apply_softmax=apply_softmax
    )


def output_score(outputs: np.ndarray, spec: OutputScoreSpec) -> np.ndarray:
    """Score per sample from (N, classes) or (classes,) model outputs (dequantized)."""
    p = np.asarray(outputs, dtype=np.float64)
    if spec.apply_softmax:
        e = np.exp(p - p.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
    return p[..., spec.class_ids].max(axis=-1)


def score_edges(bins: int) -> list[float]:
    return [round(float(e), 12) for e in np.linspace(0.0, 1.0, bins + 1)]
