"""Detection and scoring logic on hand-built score sequences (the LiteRT path is covered in test_chain)."""

from __future__ import annotations

import math

import numpy as np

from converters.features import FeatureSpec
from converters.reference.datasets import KwsStream
from converters.reference.stream_eval import detect, score_detections

POS = [2, 3]


def _stream(events: list[tuple[float, float, int]], seconds: float = 60.0) -> KwsStream:
    spec = FeatureSpec()
    n_frames = int(seconds * spec.sample_rate / spec.hop_samples)
    ev = np.array(events, dtype=float).reshape(-1, 3)
    return KwsStream(
        frames=np.zeros((n_frames, spec.n_mels), np.float32),
        onsets_s=ev[:, 0],
        offsets_s=ev[:, 1],
        class_ids=ev[:, 2].astype(np.int64),
        noise_dbfs=-50.0,
        spec=spec,
    )


def _scores(times: np.ndarray, hits: dict[float, int]) -> np.ndarray:
    scores = np.zeros((times.size, 4), np.float32)
    scores[:, 0] = 1.0
    for t, cls in hits.items():
        k = int(np.argmin(np.abs(times - t)))
        scores[k] = 0.0
        scores[k, cls] = 0.95
    return scores


def test_suppression_window_keeps_one_detection_per_burst() -> None:
    times = np.arange(1.0, 10.0, 0.1)
    scores = _scores(times, {2.0: 2, 2.1: 2, 2.2: 2, 2.9: 2, 3.2: 3})
    found = detect(times, scores, POS, threshold=0.8, suppression_s=1.0)
    assert [(round(d.time_s, 1), d.class_id) for d in found] == [(2.0, 2), (3.2, 3)]


def test_threshold_is_respected() -> None:
    times = np.arange(1.0, 5.0, 0.1)
    scores = _scores(times, {2.0: 2})
    assert detect(times, scores, POS, threshold=0.96, suppression_s=1.0) == []


def test_hits_false_wakes_and_misses_are_counted() -> None:
    # Keyword 2 at 10 s (detected in view), keyword 3 at 20 s (missed), unknown word at 30 s fires class 2,
    # a class-3 detection during the class-2 keyword at 40 s is a false wake, not a hit.
    stream = _stream([(10.0, 10.4, 2), (20.0, 20.5, 3), (30.0, 30.4, 1), (40.0, 40.4, 2)])
    times = np.arange(1.0, 59.0, 0.1)
    scores = _scores(times, {10.5: 2, 30.6: 2, 40.6: 3})
    found = detect(times, scores, POS, threshold=0.8, suppression_s=1.0)
    m = score_detections(
        found, stream, POS, threshold=0.8, suppression_s=1.0, windows=times.size, stride_s=0.1
    )
    assert (m.keyword_events, m.detections, m.true_activations, m.false_activations) == (3, 3, 1, 2)
    assert m.false_rejections == 2 and math.isclose(m.false_rejection_rate, 2 / 3)
    assert math.isclose(m.false_activations_per_hour, 2 * 3600 / stream.duration_s)


def test_detection_after_the_word_left_the_window_is_false() -> None:
    stream = _stream([(10.0, 10.4, 2)])
    times = np.arange(1.0, 59.0, 0.1)
    found = detect(times, _scores(times, {11.6: 2}), POS, threshold=0.8, suppression_s=1.0)
    m = score_detections(
        found, stream, POS, threshold=0.8, suppression_s=1.0, windows=times.size, stride_s=0.1
    )
    assert (m.true_activations, m.false_activations, m.false_rejection_rate) == (0, 1, 1.0)
