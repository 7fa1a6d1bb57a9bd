"""Performance calibration on a continuous stream: false activations per hour and false rejection rate.

A keyword spotter is judged by what it does on a long recording, not on pre-cut clips: the model
slides over the stream, a detection fires when a keyword's score crosses the threshold, and a
suppression window stops one utterance from firing twice (the device does the same). Each keyword
in the ground truth may be matched by one detection of the same class while it is in view; every
other detection is a false activation (a false wake, which costs battery on a device).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from converters.reference.datasets import KwsStream

SECONDS_PER_HOUR = 3600.0
MIN_IN_VIEW_S = 0.1  # a detection counts for a word once this much of the word is inside the window


class StreamMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    noise_dbfs: float
    duration_s: float
    windows: int
    stride_s: float
    threshold: float
    suppression_s: float
    keyword_events: int
    detections: int
    true_activations: int
    false_activations: int
    false_activations_per_hour: float
    false_rejections: int
    false_rejection_rate: float


class Detection(BaseModel):
    model_config = ConfigDict(frozen=True)

    time_s: float  # end of the window that fired
    class_id: int
    score: float


def window_scores(
    tflite_path: Path, stream: KwsStream, *, stride_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Run a .tflite over every ``stride_frames``-th window: (window end times in s, scores (n, classes))."""
    from ai_edge_litert.interpreter import Interpreter

    if stride_frames < 1:
        raise ValueError("stride_frames must be >= 1")
    spec = stream.spec
    n_win = spec.frames_per_window
    starts = np.arange(0, stream.frames.shape[0] - n_win + 1, stride_frames)
    if starts.size == 0:
        raise ValueError(f"stream has {stream.frames.shape[0]} frames, fewer than one window ({n_win})")
    interpreter = Interpreter(model_path=str(tflite_path), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    if int(np.prod(inp["shape"][1:])) != n_win * spec.n_mels:
        raise ValueError(
            f"{tflite_path}: model input {list(inp['shape'])} does not take a {spec.input_shape} window"
        )
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    scores = np.zeros((starts.size, int(out["shape"][-1])), dtype=np.float32)
    for k, s in enumerate(starts):
        x = stream.frames[s : s + n_win].reshape(inp["shape"])
        if inp["dtype"] != np.float32:  # quantized input: same affine mapping as the device uses
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / in_scale + in_zero), info.min, info.max)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        scores[k] = (y.astype(np.float32) - out_zero) * out_scale if out["dtype"] != np.float32 else y
    ends_s = (starts * spec.hop_samples + spec.window_samples) / spec.sample_rate
    return ends_s, scores


def detect(
    ends_s: np.ndarray,
    scores: np.ndarray,
    positive_class_ids: list[int],
    *,
    threshold: float,
    suppression_s: float,
) -> list[Detection]:
    """Fire when the best keyword score reaches ``threshold``; then stay quiet for ``suppression_s``."""
    positives = np.asarray(positive_class_ids, dtype=np.int64)
    detections: list[Detection] = []
    quiet_until = -np.inf
    for t, row in zip(ends_s, scores, strict=True):
        best = int(positives[np.argmax(row[positives])])
        if row[best] >= threshold and t >= quiet_until:
            detections.append(Detection(time_s=float(t), class_id=best, score=float(row[best])))
            quiet_until = t + suppression_s
    return detections


def score_detections(
    detections: list[Detection],
    stream: KwsStream,
    positive_class_ids: list[int],
    *,
    threshold: float,
    suppression_s: float,
    windows: int,
    stride_s: float,
) -> StreamMetrics:
    """Match detections to keyword events: same class, fired while the word was in view.

    In view: the window (ending at the detection time) holds at least ``MIN_IN_VIEW_S`` of the word.
    """
    window_s = stream.spec.window_samples / stream.spec.sample_rate
    is_kw = np.isin(stream.class_ids, positive_class_ids)
    lo = stream.onsets_s + MIN_IN_VIEW_S
    hi = stream.offsets_s + window_s - MIN_IN_VIEW_S
    matched = np.zeros(stream.class_ids.size, dtype=bool)
    true_hits = false_hits = 0
    for d in detections:
        in_view = is_kw & (stream.class_ids == d.class_id) & (d.time_s >= lo) & (d.time_s <= hi)
        candidates = np.flatnonzero(in_view)
        if candidates.size == 0:
            false_hits += 1
        elif not matched[candidates].all():
            matched[candidates[~matched[candidates]][0]] = True
            true_hits += 1
        # else: a repeat on an already detected word after the suppression window — neither hit nor false wake
    n_kw = int(is_kw.sum())
    misses = n_kw - int(matched.sum())
    duration = stream.duration_s
    return StreamMetrics(
        noise_dbfs=stream.noise_dbfs,
        duration_s=duration,
        windows=windows,
        stride_s=stride_s,
        threshold=threshold,
        suppression_s=suppression_s,
        keyword_events=n_kw,
        detections=len(detections),
        true_activations=true_hits,
        false_activations=false_hits,
        false_activations_per_hour=false_hits * SECONDS_PER_HOUR / duration,
        false_rejections=misses,
        false_rejection_rate=misses / n_kw if n_kw else 0.0,
    )


def evaluate_stream(
    tflite_path: Path,
    stream: KwsStream,
    positive_class_ids: list[int],
    *,
    threshold: float,
    suppression_s: float = 1.0,
    stride_frames: int = 5,
) -> StreamMetrics:
    """False activations per hour and false rejection rate of one .tflite on one stream (LiteRT)."""
    ends_s, scores = window_scores(tflite_path, stream, stride_frames=stride_frames)
    detections = detect(ends_s, scores, positive_class_ids, threshold=threshold, suppression_s=suppression_s)
    stride_s = stride_frames * stream.spec.hop_samples / stream.spec.sample_rate
    return score_detections(
        detections,
        stream,
        positive_class_ids,
        threshold=threshold,
        suppression_s=suppression_s,
        windows=int(ends_s.size),
        stride_s=stride_s,
    )


def feature_histogram(frames: np.ndarray, bins: int = 20) -> np.ndarray:
    """Fraction of feature values per bin over [0, 1]: what drift monitoring compares."""
    counts, _ = np.histogram(frames, bins=bins, range=(0.0, 1.0))
    return counts / max(1, counts.sum())
