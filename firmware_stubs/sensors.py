"""Sensor providers for TinyFleet's two reference tasks, built on converters.reference's loaders.

- ``digits``: scikit-learn's 8x8 digits exactly as converters.reference.digits prepares them
  ((n, 8, 8, 1) float32 in [0, 1]); by default the held-out ``eval`` split, so the device sees images
  the model was not trained on. Events = one chosen digit. No drifted pool: drift it in feature
  space (``DriftSpec(shift=..., scale=..., noise_std=...)``).
- ``kws``: 1 s windows (49 x n_mels x 1) cut from the committed continuous recording, every
  ``hop_frames`` feature frames. A window that holds a whole word is labelled with that word's class
  (event = a keyword), one that holds no part of any word is "silence", windows cutting a word are
  dropped (their ground truth is ambiguous). The drifted pool is the same recording at the louder
  noise floor (-35 dBFS instead of -55 dBFS): same speech at the same times, so the two pools align
  window for window and drift is a real change of the acoustic environment, not synthetic noise.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np

from firmware_stubs.sensor_streams import SensorStream, StreamConfig, StreamPools, WindowPool

Task = Literal["kws", "digits"]
TASKS: tuple[Task, ...] = ("kws", "digits")
DEFAULT_KWS_HOP_FRAMES = 10  # 0.2 s between window starts


def digits_pools(*, event_digit: int = 0, split: str = "eval", seed: int = 0) -> StreamPools:
    from converters.reference.digits import load_digits_task  # scikit-learn: simulation side only

    if isinstance(event_digit, bool) or not isinstance(event_digit, int) or not 0 <= event_digit <= 9:
        raise ValueError(f"event_digit must be a digit 0..9, got {event_digit!r}")
    task = load_digits_task(seed)
    splits = {
        "train": (task.x_train, task.y_train),
        "calibration": (task.x_cal, task.y_cal),
        "eval": (task.x_eval, task.y_eval),
    }
    if split not in splits:
        raise ValueError(f"unknown digits split {split!r}; known: {', '.join(splits)}")
    x, y = splits[split]
    pool = WindowPool(windows=x, labels=y, is_event=y == event_digit, name=f"digits-{split}")
    return StreamPools(nominal=pool, class_names=tuple(task.class_names))


def _kws_windows(frames: np.ndarray, starts: np.ndarray, n_win: int) -> np.ndarray:
    idx = starts[:, None] + np.arange(n_win)[None, :]
    return frames[idx][..., None].astype(np.float32)  # channel axis, as the models take it


def kws_pools(
    *,
    hop_frames: int = DEFAULT_KWS_HOP_FRAMES,
    nominal: str = "nominal",
    drifted: str | None = "loud",
    data_dir: Path | None = None,
) -> StreamPools:
    from converters.reference.datasets import DATA_DIR, load_kws_meta, load_kws_stream

    if isinstance(hop_frames, bool) or not isinstance(hop_frames, int) or hop_frames < 1:
        raise ValueError(f"hop_frames must be a positive integer, got {hop_frames!r}")
    directory = DATA_DIR if data_dir is None else data_dir
    meta = load_kws_meta(directory)
    positive = {int(i) for i in meta["positive_class_ids"]}  # type: ignore[attr-defined]
    class_names = tuple(str(c) for c in meta["class_names"])  # type: ignore[attr-defined]
    base = load_kws_stream(nominal, directory)
    spec = base.spec
    n_win = spec.frames_per_window
    if base.frames.shape[0] < n_win:
        raise ValueError(f"kws stream {nominal!r} is shorter than one window")
    starts = np.arange(0, base.frames.shape[0] - n_win + 1, hop_frames)
    hop_s = spec.hop_samples / spec.sample_rate
    win_start_s = starts * hop_s
    win_end_s = ((starts + n_win - 1) * spec.hop_samples + spec.frame_samples) / spec.sample_rate
    labels = np.zeros(starts.size, dtype=np.int64)  # 0 = silence (class_names[0])
    keep = np.ones(starts.size, dtype=bool)
    for onset, offset, class_id in zip(base.onsets_s, base.offsets_s, base.class_ids, strict=True):
        overlaps = (win_start_s < offset) & (win_end_s > onset)
        whole = (win_start_s <= onset) & (win_end_s >= offset)
        labels[whole] = int(class_id)
        keep &= ~(overlaps & ~whole)
    starts, labels = starts[keep], labels[keep]
    is_event = np.isin(labels, sorted(positive))

    def pool(label: str, frames: np.ndarray) -> WindowPool:
        return WindowPool(
            windows=_kws_windows(frames, starts, n_win), labels=labels, is_event=is_event, name=f"kws-{label}"
        )

    drifted_pool = None
    if drifted is not None:
        other = load_kws_stream(drifted, directory)
        if other.frames.shape != base.frames.shape or not np.array_equal(other.onsets_s, base.onsets_s):
            raise ValueError(f"kws streams {nominal!r} and {drifted!r} are not the same recording")
        drifted_pool = pool(drifted, other.frames)
    return StreamPools(nominal=pool(nominal, base.frames), drifted=drifted_pool, class_names=class_names)


@cache
def task_pools(task: Task) -> StreamPools:
    """The default pools of a reference task, loaded once per process and shared (read-only arrays),
    so a simulated fleet of many boards holds one copy (the KWS pools are ~10 MB)."""
    if task == "kws":
        return kws_pools()
    if task == "digits":
        return digits_pools()
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def make_stream(task: Task, config: StreamConfig | None = None) -> SensorStream:
    return SensorStream(task_pools(task), config)
