"""Loading the reference tasks' committed data into arrays ready for training and conversion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.features import FeatureSpec, dequantize_features

DATA_DIR = Path(__file__).resolve().parent / "data"


class DatasetError(ValueError):
    """A committed data file is missing or malformed."""


@dataclass(frozen=True)
class TaskData:
    name: str
    class_names: list[str]
    positive_class_ids: list[int]
    x_train: np.ndarray
    y_train: np.ndarray
    x_cal: np.ndarray
    y_cal: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    feature_spec: FeatureSpec | None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def _open_npz(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (regenerate with python -m converters.reference.kws_data)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable .npz file ({exc})") from exc
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DatasetError(f"{path}: missing arrays {missing}")
    return arrays


def load_kws_meta(data_dir: Path = DATA_DIR) -> dict[str, object]:
    path = data_dir / "kws_meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read metadata ({exc})") from exc


def load_kws_task(data_dir: Path = DATA_DIR) -> TaskData:
    meta = load_kws_meta(data_dir)
    spec = FeatureSpec.model_validate(meta["feature_spec"])
    arrays = _open_npz(
        data_dir / "kws_dataset.npz", ("features", "labels", "split_train", "split_calibration", "split_eval")
    )
    feats, labels = arrays["features"], arrays["labels"].astype(np.int64)
    if feats.ndim != 3 or feats.shape[1:] != spec.input_shape or feats.shape[0] != labels.shape[0]:
        raise DatasetError(f"kws features have shape {feats.shape}, expected (n, {spec.input_shape})")
    class_names = [str(c) for c in meta["class_names"]]  # type: ignore[attr-defined]
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise DatasetError("kws labels outside the class range")
    x = dequantize_features(feats)[..., None]  # channel axis for the convolutional models

    def part(name: str) -> tuple[np.ndarray, np.ndarray]:
        idx = arrays[f"split_{name}"]
        return x[idx], labels[idx]

    (xt, yt), (xc, yc), (xe, ye) = part("train"), part("calibration"), part("eval")
    return TaskData(
        name="kws",
        class_names=class_names,
        positive_class_ids=[int(i) for i in meta["positive_class_ids"]],  # type: ignore[attr-defined]
        x_train=xt,
        y_train=yt,
        x_cal=xc,
        y_cal=yc,
        x_eval=xe,
        y_eval=ye,
        feature_spec=spec,
    )


@dataclass(frozen=True)
class KwsStream:
    """Feature frames of a continuous recording with the keyword/unknown-word ground truth."""

    frames: np.ndarray  # (n_frames, n_mels) float32 in [0, 1]
    onsets_s: np.ndarray
    offsets_s: np.ndarray
    class_ids: np.ndarray
    noise_dbfs: float
    spec: FeatureSpec

    @property
    def duration_s(self) -> float:
        return (
            self.frames.shape[0] * self.spec.hop_samples + self.spec.frame_samples
        ) / self.spec.sample_rate


def load_kws_stream(label: str = "nominal", data_dir: Path = DATA_DIR) -> KwsStream:
    spec = FeatureSpec.model_validate(load_kws_meta(data_dir)["feature_spec"])
    arrays = _open_npz(data_dir / f"kws_stream_{label}.npz", ("frames", "events", "noise_dbfs"))
    frames, events = arrays["frames"], arrays["events"]
    if frames.ndim != 2 or frames.shape[1] != spec.n_mels:
        raise DatasetError(f"stream frames have shape {frames.shape}, expected (n, {spec.n_mels})")
    if events.ndim != 2 or events.shape[1] != 3:
        raise DatasetError(f"stream events have shape {events.shape}, expected (n, 3)")
    return KwsStream(
        frames=dequantize_features(frames),
        onsets_s=events[:, 0],
        offsets_s=events[:, 1],
        class_ids=events[:, 2].astype(np.int64),
        noise_dbfs=float(arrays["noise_dbfs"]),
        spec=spec,
    )
