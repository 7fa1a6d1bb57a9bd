"""Digits reference task: scikit-learn's bundled 8x8 handwritten digits, scaled to [0, 1]."""

from __future__ import annotations

import numpy as np

from converters.reference.datasets import TaskData

DIGIT_CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(10))


def load_digits_task(seed: int = 0) -> TaskData:
    """Deterministic 70 / 10 / 20 train / calibration / eval split, stratified by class."""
    from sklearn.datasets import load_digits  # server-side only; bundled with scikit-learn, no download

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]  # (n, 8, 8, 1), pixel values 0..16
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng([seed, 1_797])
    parts: dict[str, list[np.ndarray]] = {"train": [], "calibration": [], "eval": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_train, n_cal = int(0.7 * idx.size), int(0.1 * idx.size)
        parts["train"].append(idx[:n_train])
        parts["calibration"].append(idx[n_train : n_train + n_cal])
        parts["eval"].append(idx[n_train + n_cal :])
    split = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
    return TaskData(
        name="digits",
        class_names=list(DIGIT_CLASS_NAMES),
        positive_class_ids=list(range(10)),
        x_train=x[split["train"]],
        y_train=y[split["train"]],
        x_cal=x[split["calibration"]],
        y_cal=y[split["calibration"]],
        x_eval=x[split["eval"]],
        y_eval=y[split["eval"]],
        feature_spec=None,
    )
