"""Per-model detection threshold from a calibration stream ("performance calibration").

One threshold per task does not suit every model of a chain: a large model is confident on partial
words and wakes falsely, a small one is rarely confident and misses keywords. So each model gets its
own operating point, picked on a stream that is not the one the chain reports on: the lowest false
rejection rate among the thresholds whose false activations per hour stay within a target. When no
threshold meets the target the one with the fewest false activations is kept and flagged.

Resolution: one false activation on a stream of D seconds is 3600 / D per hour (6/h on the 600 s
calibration stream), so a target below that means "no false activation at all on this stream".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from converters.reference.datasets import KwsStream
from converters.reference.stream_eval import SECONDS_PER_HOUR, detect, score_detections

DEFAULT_TARGET_FA_PER_HOUR = 12.0  # at most one false wake per 5 minutes of audio
# Full-int8 softmax scores move in steps of 1/256 and top out at 255/256 ~ 0.996: a finer grid or a
# threshold above 0.995 only repeats or silences the model.
DEFAULT_THRESHOLDS: tuple[float, ...] = (
    *(round(0.5 + 0.02 * i, 2) for i in range(25)),  # 0.50 .. 0.98
    0.99,
    0.995,
)


class CalibrationError(ValueError):
    """The calibration request is unusable (empty or out-of-range thresholds, bad target)."""


class CalibrationPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float
    false_activations: int
    false_activations_per_hour: float
    false_rejection_rate: float


class ThresholdCalibration(BaseModel):
    """The chosen per-model threshold and the curve it was chosen from (calibration stream only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: str  # label of the calibration stream (kws_stream_<label>.npz)
    noise_dbfs: float
    duration_s: float
    keyword_events: int
    target_false_activations_per_hour: float
    resolution_per_hour: float = Field(description="one false activation on this stream, per hour")
    threshold: float
    false_activations_per_hour: float
    false_rejection_rate: float
    meets_target: bool
    flag: str | None = None  # why the target was not met (None when it was)
    curve: list[CalibrationPoint]


def check_calibration_request(thresholds: Sequence[float], target_fa_per_hour: float) -> tuple[float, ...]:
    """Validated, sorted, de-duplicated thresholds; raises ``CalibrationError`` naming the problem."""
    if not math.isfinite(target_fa_per_hour) or target_fa_per_hour < 0:
        raise CalibrationError(
            f"target false activations per hour must be a finite number >= 0, got {target_fa_per_hour}"
        )
    if len(thresholds) == 0:
        raise CalibrationError("no thresholds to try")
    bad = [t for t in thresholds if not (math.isfinite(t) and 0.0 < t <= 1.0)]
    if bad:
        raise CalibrationError(f"thresholds must lie in (0, 1], got {bad}")
    return tuple(sorted(set(float(t) for t in thresholds)))


def calibrate_threshold(
    ends_s: np.ndarray,
    scores: np.ndarray,
    stream: KwsStream,
    positive_class_ids: list[int],
    *,
    stream_label: str,
    suppression_s: float,
    stride_s: float,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    target_fa_per_hour: float = DEFAULT_TARGET_FA_PER_HOUR,
) -> ThresholdCalibration:
    """Sweep ``thresholds`` over precomputed window scores (see ``stream_eval.window_scores``)."""
    grid = check_calibration_request(thresholds, target_fa_per_hour)
    curve: list[CalibrationPoint] = []
    keyword_events = 0
    for t in grid:
        found = detect(ends_s, scores, positive_class_ids, threshold=t, suppression_s=suppression_s)
        m = score_detections(
            found,
            stream,
            positive_class_ids,
            threshold=t,
            suppression_s=suppression_s,
            windows=int(ends_s.size),
            stride_s=stride_s,
        )
        keyword_events = m.keyword_events
        curve.append(
            CalibrationPoint(
                threshold=t,
                false_activations=m.false_activations,
                false_activations_per_hour=round(m.false_activations_per_hour, 3),
                false_rejection_rate=round(m.false_rejection_rate, 4),
            )
        )
    chosen, flag = choose_threshold(curve, target_fa_per_hour)
    return ThresholdCalibration(
        stream=stream_label,
        noise_dbfs=stream.noise_dbfs,
        duration_s=round(stream.duration_s, 3),
        keyword_events=keyword_events,
        target_false_activations_per_hour=target_fa_per_hour,
        resolution_per_hour=round(SECONDS_PER_HOUR / stream.duration_s, 3),
        threshold=chosen.threshold,
        false_activations_per_hour=chosen.false_activations_per_hour,
        false_rejection_rate=chosen.false_rejection_rate,
        meets_target=flag is None,
        flag=flag,
        curve=curve,
    )


def choose_threshold(
    curve: Sequence[CalibrationPoint], target_fa_per_hour: float
) -> tuple[CalibrationPoint, str | None]:
    """Lowest FRR within the FA/h target; else fewest false activations, with a flag saying so.

    Ties (same FRR and false activations) take the middle of the tied thresholds: the calibration
    stream cannot tell them apart, and the middle keeps a margin both ways for unseen audio.
    """
    if not curve:
        raise CalibrationError("empty calibration curve")
    ok = [p for p in curve if p.false_activations_per_hour <= target_fa_per_hour]
    if ok:
        best = min((p.false_rejection_rate, p.false_activations) for p in ok)
        flag = None
    else:
        fewest = min(p.false_activations for p in curve)
        best = min(
            (p.false_rejection_rate, p.false_activations) for p in curve if p.false_activations == fewest
        )
        low = min(p.false_activations_per_hour for p in curve)
        flag = (
            f"no threshold reaches {target_fa_per_hour:g} false activations/h on the calibration stream; "
            f"fewest: {low:g}/h"
        )
    pool = ok if ok else list(curve)
    tied = sorted(
        (p for p in pool if (p.false_rejection_rate, p.false_activations) == best), key=lambda p: p.threshold
    )
    return tied[len(tied) // 2], flag
