"""Threshold choice on hand-built score sequences and calibration curves (LiteRT path: test_chain)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from converters.features import FeatureSpec
from converters.reference.datasets import KwsStream
from converters.reference.threshold_calibration import (
    CalibrationError,
    CalibrationPoint,
    calibrate_threshold,
    choose_threshold,
)

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
        noise_dbfs=-55.0,
        spec=spec,
    )


def _scores(times: np.ndarray, hits: dict[float, tuple[int, float]]) -> np.ndarray:
    scores = np.zeros((times.size, 4), np.float32)
    scores[:, 0] = 1.0
    for t, (cls, score) in hits.items():
        k = int(np.argmin(np.abs(times - t)))
        scores[k] = 0.0
        scores[k, cls] = score
    return scores


def _point(t: float, fa: int, frr: float, seconds: float = 600.0) -> CalibrationPoint:
    return CalibrationPoint(
        threshold=t,
        false_activations=fa,
        false_activations_per_hour=fa * 3600 / seconds,
        false_rejection_rate=frr,
    )


def test_lowest_frr_within_the_target_is_chosen() -> None:
    # Keyword 2 at 10 s scores 0.7 (caught only below 0.7); keyword 3 at 20 s scores 0.95;
    # unknown words at 30 s and 40 s fire at 0.6 and 0.75. 60 s stream: one false wake = 60/h.
    stream = _stream([(10.0, 10.4, 2), (20.0, 20.5, 3), (30.0, 30.4, 1), (40.0, 40.4, 1)])
    times = np.arange(1.0, 59.0, 0.1)
    scores = _scores(times, {10.5: (2, 0.7), 20.6: (3, 0.95), 30.6: (2, 0.6), 40.6: (3, 0.75)})
    common = {
        "stream_label": "cal",
        "suppression_s": 1.0,
        "stride_s": 0.1,
        "thresholds": (0.5, 0.65, 0.72, 0.8),
    }
    cal = calibrate_threshold(times, scores, stream, POS, target_fa_per_hour=60.0, **common)  # type: ignore[arg-type]
    by_t = {p.threshold: (p.false_activations, p.false_rejection_rate) for p in cal.curve}
    assert by_t == {0.5: (2, 0.0), 0.65: (1, 0.0), 0.72: (1, 0.5), 0.8: (0, 0.5)}
    assert (cal.threshold, cal.meets_target, cal.flag) == (0.65, True, None)
    assert math.isclose(cal.resolution_per_hour, 3600 / stream.duration_s, rel_tol=1e-3)
    strict = calibrate_threshold(times, scores, stream, POS, target_fa_per_hour=0.0, **common)  # type: ignore[arg-type]
    assert strict.threshold == 0.8 and strict.meets_target and strict.false_activations_per_hour == 0.0


def test_unreachable_target_keeps_the_fewest_false_activations_and_flags_it() -> None:
    curve = [_point(0.5, 9, 0.0), _point(0.7, 4, 0.1), _point(0.9, 2, 0.3), _point(0.95, 2, 0.5)]
    chosen, flag = choose_threshold(curve, target_fa_per_hour=6.0)  # 2 per 600 s = 12/h > 6/h
    assert chosen.threshold == 0.9  # fewest false wakes, and of those the lowest FRR
    assert flag is not None and "no threshold reaches 6" in flag and "12/h" in flag


def test_ties_take_the_middle_threshold() -> None:
    curve = [_point(t, 0, 0.1) for t in (0.6, 0.7, 0.8)] + [_point(0.5, 5, 0.0), _point(0.9, 0, 0.4)]
    chosen, flag = choose_threshold(curve, target_fa_per_hour=12.0)
    assert (chosen.threshold, flag) == (0.7, None)


@pytest.mark.parametrize(
    ("thresholds", "target", "message"),
    [
        ((), 12.0, "no thresholds"),
        ((0.5, 1.5), 12.0, r"\(0, 1\]"),
        ((0.5, float("nan")), 12.0, r"\(0, 1\]"),
        ((0.5,), -1.0, "finite number >= 0"),
        ((0.5,), float("inf"), "finite number >= 0"),
    ],
)
def test_bad_calibration_requests_are_refused(
    thresholds: tuple[float, ...], target: float, message: str
) -> None:
    stream = _stream([(10.0, 10.4, 2)])
    times = np.arange(1.0, 59.0, 0.1)
    with pytest.raises(CalibrationError, match=message):
        calibrate_threshold(
            times,
            _scores(times, {}),
            stream,
            POS,
            stream_label="cal",
            suppression_s=1.0,
            stride_s=0.1,
            thresholds=thresholds,
            target_fa_per_hour=target,
        )
    with pytest.raises(CalibrationError, match="empty"):
        choose_threshold([], 12.0)
