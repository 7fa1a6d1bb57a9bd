"""Per-device telemetry totals for the current stage, column-wise and aligned with a FleetView's rows.

The gates sum these under a cohort or control mask (numpy), so one decision over 100,000 devices is a
handful of masked sums. The DB layer fills the arrays with one GROUP BY device query over the stage's
windows; :meth:`DeviceTotals.from_windows` does the same from telemetry messages in memory (tests,
demo) and follows the same rule for which windows count:

* windows that start at or after the stage start;
* for a device commanded to install the candidate: windows run on the candidate (``model.version ==
  counter``) or at a fallback level > 0 (falling back is the candidate's doing);
* for any other device: windows run on the previous version (or any version when none is given).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from fleet_server.rollouts.cohorts import FleetView
from fleet_server.rollouts.model import RolloutError

INSTALL_NONE, INSTALL_OK, INSTALL_FAILED = 0, 1, 2
_FAILED_OTA_STATES = frozenset({"failed", "reverted"})
SERVING_ERROR_CODES = frozenset({"invoke_failed", "null_output", "nonfinite_output", "model_load_failed"})


def _zeros(n: int, dtype: type = np.int64) -> np.ndarray:
    return np.zeros(n, dtype=dtype)


@dataclass
class DeviceTotals:
    """Sums per device since the stage started. Rates are recomputed from sums, never averaged."""

    inferences: np.ndarray
    positives: np.ndarray
    false_positives: np.ndarray
    window_s: np.ndarray  # float64
    active_s: np.ndarray  # float64 (duty cycle x window length)
    latency_p95_us: np.ndarray  # float64: inference-weighted mean of the device's window p95s
    fell_back: np.ndarray  # bool: any window at fallback level > 0
    battery_drain_pct_per_h: np.ndarray  # float64, NaN when no two discharging reports
    install_state: np.ndarray  # int8: INSTALL_NONE / INSTALL_OK / INSTALL_FAILED for the candidate
    serving_errors: np.ndarray  # invoke failures, null / non-finite outputs
    shadow_samples: np.ndarray
    candidate_positives: np.ndarray
    candidate_false_positives: np.ndarray
    candidate_latency_p95_us: np.ndarray  # float64
    input_hist: dict[int, np.ndarray] = field(default_factory=dict)  # feature -> (devices, bins) counts

    @classmethod
    def empty(cls, n: int) -> DeviceTotals:
        return cls(
            inferences=_zeros(n),
            positives=_zeros(n),
            false_positives=_zeros(n),
            window_s=_zeros(n, np.float64),
            active_s=_zeros(n, np.float64),
            latency_p95_us=_zeros(n, np.float64),
            fell_back=_zeros(n, bool),
            battery_drain_pct_per_h=np.full(n, np.nan),
            install_state=_zeros(n, np.int8),
            serving_errors=_zeros(n),
            shadow_samples=_zeros(n),
            candidate_positives=_zeros(n),
            candidate_false_positives=_zeros(n),
            candidate_latency_p95_us=_zeros(n, np.float64),
        )

    def check(self, n: int) -> None:
        for name, arr in vars(self).items():
            if name == "input_hist":
                for feature, h in arr.items():
                    if h.ndim != 2 or h.shape[0] != n:
                        raise RolloutError(
                            f"input_hist[{feature}] must have shape ({n}, bins), got {h.shape}"
                        )
            elif len(arr) != n:
                raise RolloutError(f"totals column {name!r} has {len(arr)} rows, the fleet has {n}")

    @classmethod
    def from_windows(
        cls,
        fleet: FleetView,
        windows: Iterable,
        *,
        since: float,
        exposed: Iterable[str],
        candidate_counter: int,
        previous_counter: int | None,
        release_id: str | None = None,
        ota_events: Iterable = (),
        error_events: Iterable = (),
    ) -> DeviceTotals:
        """Build the totals from telemetry messages (``telemetry.schemas`` MetricsWindow / OtaStatus /
        OtaStateChanged / ErrorEvent). Duplicate (device, seq) windows count once; unknown devices are
        skipped."""
        n = fleet.size
        t = cls.empty(n)
        idx = fleet.index()
        exposed_mask = fleet.mask_of(exposed)
        seen: set[tuple[str, int]] = set()
        p95_weighted = np.zeros(n)
        cand_p95_weighted = np.zeros(n)
        battery: dict[int, list[tuple[int, int, float, bool]]] = {}
        for w in windows:
            i = idx.get(w.device_id)
            key = (w.device_id, w.seq)
            if i is None or key in seen or w.window_start_s < since:
                continue
            if exposed_mask[i]:
                if w.model.version != candidate_counter and w.fallback_level == 0:
                    continue
            elif previous_counter is not None and w.model.version != previous_counter:
                continue
            seen.add(key)
            t.inferences[i] += w.inferences
            t.positives[i] += w.positives
            t.false_positives[i] += w.false_positives
            t.window_s[i] += w.window_len_s
            t.active_s[i] += w.duty_cycle * w.window_len_s
            p95_weighted[i] += w.latency_p95_us * w.inferences
            t.fell_back[i] |= w.fallback_level > 0
            if w.input_hist:
                hist = t.input_hist.get(w.input_feature)
                if hist is None:
                    hist = t.input_hist[w.input_feature] = np.zeros((n, len(w.input_hist)), dtype=np.int64)
                if hist.shape[1] != len(w.input_hist):
                    raise RolloutError(
                        f"window {key} has {len(w.input_hist)} input bins, others have {hist.shape[1]}"
                    )
                hist[i] += np.asarray(w.input_hist, dtype=np.int64)
            if w.shadow is not None and w.shadow.candidate_version == candidate_counter:
                t.shadow_samples[i] += w.shadow.samples
                t.candidate_positives[i] += w.shadow.candidate_positives
                t.candidate_false_positives[i] += w.shadow.candidate_false_positives
                cand_p95_weighted[i] += w.shadow.candidate_latency_p95_us * w.shadow.samples
            if w.battery_pct is not None:
                battery.setdefault(i, []).append((w.seq, w.window_end_s, w.battery_pct, w.charging))
        with np.errstate(invalid="ignore", divide="ignore"):
            t.latency_p95_us = np.where(t.inferences > 0, p95_weighted / np.maximum(t.inferences, 1), 0.0)
            t.candidate_latency_p95_us = np.where(
                t.shadow_samples > 0, cand_p95_weighted / np.maximum(t.shadow_samples, 1), 0.0
            )
        for i, series in battery.items():
            t.battery_drain_pct_per_h[i] = _drain(series)
        for ev in ota_events:
            i = idx.get(ev.device_id)
            if i is None or (release_id is not None and ev.release_id != release_id):
                continue
            state = getattr(ev, "state", None) or getattr(ev, "to_state", None)
            if state == "committed":
                t.install_state[i] = INSTALL_OK
            elif state in _FAILED_OTA_STATES:
                t.install_state[i] = INSTALL_FAILED
        for ev in error_events:
            i = idx.get(ev.device_id)
            if (
                i is not None
                and ev.ts >= since
                and (ev.code in SERVING_ERROR_CODES or ev.component == "runtime")
            ):
                t.serving_errors[i] += 1
        return t


def _drain(series: list[tuple[int, int, float, bool]]) -> float:
    """% per hour between consecutive discharging reports (as telemetry.aggregation does per device)."""
    series.sort()
    drop = hours = 0.0
    for (_, t0, p0, c0), (_, t1, p1, c1) in itertools.pairwise(series):
        if c0 or c1 or t1 <= t0:
            continue
        drop += p0 - p1
        hours += (t1 - t0) / 3600
    return drop / hours if hours > 0 else float("nan")
