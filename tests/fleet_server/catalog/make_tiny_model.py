"""Writes a tiny trained digits classifier and its data files (run as a child process: keeps TF out of
the test process, like the API process it stands for).

Usage: python make_tiny_model.py OUT_DIR -> OUT_DIR/{tiny.keras, calibration.npz, evaluation.npz}
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def main(out: Path) -> None:
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    y = data.target.astype(np.int64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1200], y[:1200], epochs=3, batch_size=32, verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "tiny.keras")
    np.savez(out / "calibration.npz", x=x[:100])
    np.savez(out / "evaluation.npz", x=x[1200:1400], y=y[1200:1400])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
