"""Windowed aggregation: the agent's per-window accumulator and the server's cohort merge. No I/O.

Agent side: :class:`WindowAggregator` is fed per inference (latency, decision, input summary value,
output score, active time) and per feedback (false positive); :meth:`WindowAggregator.close_record`
turns the window into a pydantic-free :class:`telemetry.device_codec.MetricsWindow` record (what the
agent encodes and sends), :meth:`WindowAggregator.close` into the pydantic
:class:`telemetry.schemas.MetricsWindow` built from that record. Pure Python on the hot path
(``bisect`` over <= 17 edges is cheaper than a numpy call per inference). Importing this module does
not import pydantic (only ``close()`` does, on first use): the device path must not pay ~16 MB for it.

Histogram rule: bins are ``[e0, e1), [e1, e2), ..., [e_{n-1}, e_n]`` (last bin closed). Values below
``e0`` are counted in the first bin and values above ``e_n`` in the last one, so every finite value is
counted and the histogram stays comparable with the baseline's bins (drift shows up as mass piling
into the edge bins). NaN/inf input values are not binned; they are counted in ``nonfinite_inputs``.
Non-finite output scores are not binned either.

Latency percentiles are nearest-rank (the value at rank ceil(p * n)) over the window's latencies;
beyond ``max_latency_samples`` per window a uniform reservoir sample is kept (bounded memory), the
maximum is always exact.

Server side: :func:`merge_windows` sums a cohort's windows into :class:`CohortTotals` (counts and
histograms summed, rates recomputed from the sums) for the rollout gates; :class:`SequenceTracker`
classifies each device's sequence numbers as new / duplicate / gap / late.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final, Literal

from telemetry import device_codec as dc
from telemetry.wire import MAX_HIST_BINS, U16_MAX, U32_MAX

if TYPE_CHECKING:
    from telemetry import schemas

    AnyModelRef = schemas.ModelRef | dc.ModelRef
    AnyWindow = schemas.MetricsWindow | dc.MetricsWindow

DEFAULT_SCORE_EDGES: Final[tuple[float, ...]] = tuple(i / 10 for i in range(11))  # 10 bins over [0, 1]


class AggregationError(ValueError):
    """Bad bin edges, bad per-inference values, or windows that cannot be merged."""


def validate_edges(edges: Sequence[float], what: str) -> tuple[float, ...]:
    """Bin edges: 2..MAX_HIST_BINS+1 finite, strictly increasing numbers."""
    try:
        out = tuple(float(e) for e in edges)
    except (TypeError, ValueError) as exc:
        raise AggregationError(f"{what} bin edges are not numbers: {exc}") from None
    if not 2 <= len(out) <= MAX_HIST_BINS + 1:
        raise AggregationError(
            f"{what} needs 2..{MAX_HIST_BINS + 1} bin edges (1..{MAX_HIST_BINS} bins), got {len(out)}"
        )
    if not all(math.isfinite(e) for e in out):
        raise AggregationError(f"{what} bin edges must be finite")
    if any(b <= a for a, b in pairwise(out)):
        raise AggregationError(f"{what} bin edges must be strictly increasing")
    return out


def bin_index(edges: tuple[float, ...], value: float) -> int:
    """Bin of ``value``; out-of-range values go to the first/last bin (see module doc)."""
    i = bisect_right(edges, value) - 1
    return 0 if i < 0 else min(i, len(edges) - 2)


def nearest_rank(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile (p in (0, 1]) of an ascending sequence; 0 for an empty one."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p * len(sorted_values)))
    return int(sorted_values[rank - 1])


def _u32(x: int) -> int:
    return x if x <= U32_MAX else U32_MAX  # saturate rather than fail a window on an absurd figure


def _device_model(model: Any) -> dc.ModelRef:
    """The device record of a model reference (callers may still pass the pydantic ModelRef)."""
    if isinstance(model, dc.ModelRef):
        return model
    try:
        return dc.ModelRef(name=model.name, version=model.version, variant=model.variant)
    except AttributeError:
        raise AggregationError(f"not a model reference: {type(model).__name__}") from None


class WindowAggregator:
    """Accumulates one device's inferences into consecutive metrics windows.

    ``model``: a :class:`telemetry.device_codec.ModelRef` or a :class:`telemetry.schemas.ModelRef`
    (kept as the device record either way; an invalid one raises SchemaViolation here, not at close).

    ``first_seq`` must be the next unused sequence number; the agent persists it with its telemetry
    buffer so that a reboot does not restart at 0 (the server would take the windows for duplicates).
    """

    def __init__(
        self,
        device_id: str,
        model: AnyModelRef,
        *,
        input_edges: Sequence[float] | None = None,
        output_edges: Sequence[float] | None = DEFAULT_SCORE_EDGES,
        input_feature: int = 0,
        first_seq: int = 0,
        max_latency_samples: int = 4096,
        seed: int = 0,
    ) -> None:
        if not 0 <= first_seq <= U32_MAX:
            raise AggregationError(f"first_seq must be in 0..{U32_MAX}, got {first_seq}")
        if not 0 <= input_feature <= 255:
            raise AggregationError(f"input_feature must be in 0..255, got {input_feature}")
        if max_latency_samples < 1:
            raise AggregationError("max_latency_samples must be >= 1")
        self.device_id = device_id
        self.model = _device_model(model)
        self.fallback_level = 0
        self.input_feature = input_feature
        self._input_edges = validate_edges(input_edges, "input") if input_edges is not None else None
        self._output_edges = validate_edges(output_edges, "output") if output_edges is not None else None
        self._next_seq = first_seq
        self._max_samples = max_latency_samples
        self._rng = random.Random(seed)
        self._start_s: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._inferences = 0
        self._positives = 0
        self._false_positives = 0
        self._active_s = 0.0
        self._latencies: list[int] = []
        self._latency_max = 0
        self._input_hist = [0] * (len(self._input_edges) - 1) if self._input_edges else []
        self._output_hist = [0] * (len(self._output_edges) - 1) if self._output_edges else []
        self._nonfinite = 0
        self._sh_samples = 0
        self._sh_agree = 0
        self._sh_pos = 0
        self._sh_fp = 0
        self._sh_lat: list[int] = []

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def is_open(self) -> bool:
        return self._start_s is not None

    def open(self, start_s: float) -> None:
        """Start a window at Unix time ``start_s``."""
        if not math.isfinite(start_s) or start_s < 0:
            raise AggregationError(f"window start must be a non-negative Unix time, got {start_s}")
        self._start_s = start_s
        self._reset()

    def set_model(self, model: AnyModelRef, fallback_level: int) -> None:
        """Record what is running now; a window reports the model/fallback level in force at its close."""
        self.model = _device_model(model)
        self.fallback_level = fallback_level

    def _reservoir_add(self, samples: list[int], seen: int, value: int) -> None:
        if len(samples) < self._max_samples:
            samples.append(value)
        else:  # Algorithm R: keep each of the `seen` values with equal probability
            j = self._rng.randrange(seen)
            if j < self._max_samples:
                samples[j] = value

    def record_inference(
        self,
        latency_us: int,
        positive: bool,
        *,
        output_score: float | None = None,
        input_value: float | None = None,
        active_s: float | None = None,
    ) -> None:
        """One inference. ``active_s`` defaults to the latency (time the CPU was busy on it)."""
        if self._start_s is None:
            raise AggregationError("record_inference before open()")
        if latency_us < 0:
            raise AggregationError(f"latency must be >= 0 us, got {latency_us}")
        latency_us = int(latency_us)
        self._inferences += 1
        self._positives += bool(positive)
        self._active_s += latency_us / 1e6 if active_s is None else max(0.0, float(active_s))
        self._latency_max = max(self._latency_max, latency_us)
        self._reservoir_add(self._latencies, self._inferences, latency_us)
        if self._output_edges is not None and output_score is not None and math.isfinite(output_score):
            self._output_hist[bin_index(self._output_edges, output_score)] += 1
        if self._input_edges is not None and input_value is not None:
            if math.isfinite(input_value):
                self._input_hist[bin_index(self._input_edges, input_value)] += 1
            else:
                self._nonfinite += 1

    def record_batch(
        self,
        latencies_us: Sequence[int],
        positives: int,
        active_s: Sequence[float],
        *,
        input_counts: Sequence[int] | None = None,
        output_counts: Sequence[int] | None = None,
        nonfinite_inputs: int = 0,
    ) -> None:
        """Many inferences at once, as :meth:`record_inference` per inference would count them.

        For an agent that buffers its hot path and bins vectorised (one histogram pass per batch): the
        window ends up identical to feeding the same inferences one by one (same reservoir, same
        counts, same float sum of ``active_s``). ``input_counts``/``output_counts`` are per-bin counts
        over this aggregator's edges
        (see :func:`bin_index`); ``nonfinite_inputs`` counts inferences whose input summary was NaN/inf.
        """
        if self._start_s is None:
            raise AggregationError("record_batch before open()")
        lats = [int(x) for x in latencies_us]
        n = len(lats)
        if len(active_s) != n:
            raise AggregationError(f"{len(active_s)} active times for {n} latencies")
        if lats and min(lats) < 0:
            raise AggregationError(f"latency must be >= 0 us, got {min(lats)}")
        if not 0 <= positives <= n:
            raise AggregationError(f"positives must be in 0..{n}, got {positives}")
        for name, counts, hist in (
            ("input", input_counts, self._input_hist),
            ("output", output_counts, self._output_hist),
        ):
            if counts is None:
                continue
            if len(counts) != len(hist):
                raise AggregationError(f"{name}_counts has {len(counts)} bins, the window has {len(hist)}")
            if any(c < 0 for c in counts):
                raise AggregationError(f"{name}_counts must be >= 0")
        if nonfinite_inputs < 0 or (input_counts is not None and sum(input_counts) + nonfinite_inputs > n):
            raise AggregationError("input counts exceed the batch's inferences")
        if output_counts is not None and sum(output_counts) > n:
            raise AggregationError("output counts exceed the batch's inferences")
        lat_max = self._latency_max
        for lat in lats:
            self._inferences += 1
            if lat > lat_max:
                lat_max = lat
            self._reservoir_add(self._latencies, self._inferences, lat)
        self._latency_max = lat_max
        self._positives += positives
        for a in active_s:  # one by one, as record_inference adds them: the same float sum
            self._active_s += max(0.0, float(a))
        if input_counts is not None:
            for i, c in enumerate(input_counts):
                self._input_hist[i] += int(c)
        if output_counts is not None:
            for i, c in enumerate(output_counts):
                self._output_hist[i] += int(c)
        self._nonfinite += nonfinite_inputs

    @property
    def input_edges(self) -> tuple[float, ...] | None:
        return self._input_edges

    @property
    def output_edges(self) -> tuple[float, ...] | None:
        return self._output_edges

    def record_false_positive(self, n: int = 1) -> None:
        """Feedback: ``n`` positive decisions were wrong (counted in the window open when feedback comes)."""
        if n < 0:
            raise AggregationError("false-positive count must be >= 0")
        self._false_positives += n

    def record_shadow(self, agreed: bool, candidate_positive: bool, candidate_latency_us: int) -> None:
        """The shadow candidate also ran on the last input."""
        if candidate_latency_us < 0:
            raise AggregationError("candidate latency must be >= 0 us")
        self._sh_samples += 1
        self._sh_agree += bool(agreed)
        self._sh_pos += bool(candidate_positive)
        self._reservoir_add(self._sh_lat, self._sh_samples, int(candidate_latency_us))

    def record_candidate_false_positive(self, n: int = 1) -> None:
        if n < 0:
            raise AggregationError("false-positive count must be >= 0")
        self._sh_fp += n

    def close_record(
        self,
        end_s: float,
        *,
        battery_pct: float | None = None,
        battery_mv: int | None = None,
        charging: bool = False,
        est_battery_life_min: int | None = None,
        shadow_candidate_version: int | None = None,
        reopen: bool = True,
    ) -> dc.MetricsWindow:
        """Close the window at ``end_s`` and return it as a device record (no pydantic); by default the
        next window opens at ``end_s``. Send it with ``telemetry.device_codec.encode(record)``.

        Shadow figures are included when ``shadow_candidate_version`` is given (shadow mode on).
        Bad battery figures etc. raise :class:`telemetry.errors.SchemaViolation` and leave the window
        open and unchanged.
        """
        if self._start_s is None:
            raise AggregationError("close() before open()")
        elapsed = end_s - self._start_s
        if not math.isfinite(elapsed) or elapsed <= 0:
            raise AggregationError(f"window end {end_s} is not after its start {self._start_s}")
        if round(elapsed) > U16_MAX:
            raise AggregationError(
                f"window of {elapsed:.0f} s exceeds the {U16_MAX} s maximum; close windows sooner"
            )
        lat = sorted(self._latencies)
        shadow = None
        if shadow_candidate_version is not None:
            sh_lat = sorted(self._sh_lat)
            shadow = dc.ShadowFigures(
                candidate_version=shadow_candidate_version,
                samples=_u32(self._sh_samples),
                agreements=_u32(self._sh_agree),
                candidate_positives=_u32(self._sh_pos),
                candidate_false_positives=_u32(self._sh_fp),
                candidate_latency_p50_us=nearest_rank(sh_lat, 0.50),
                candidate_latency_p95_us=nearest_rank(sh_lat, 0.95),
            )
        window = dc.MetricsWindow(
            device_id=self.device_id,
            seq=self._next_seq,
            window_start_s=int(self._start_s),
            window_len_s=max(1, round(elapsed)),
            duty_cycle=min(1.0, self._active_s / elapsed),
            battery_pct=battery_pct,
            battery_mv=battery_mv,
            charging=charging,
            est_battery_life_min=est_battery_life_min,
            inferences=_u32(self._inferences),
            positives=_u32(self._positives),
            false_positives=_u32(self._false_positives),
            latency_p50_us=nearest_rank(lat, 0.50),
            latency_p95_us=nearest_rank(lat, 0.95),
            latency_max_us=_u32(self._latency_max),
            model=self.model,
            fallback_level=self.fallback_level,
            input_feature=self.input_feature,
            input_hist=[_u32(c) for c in self._input_hist],
            output_hist=[_u32(c) for c in self._output_hist],
            nonfinite_inputs=_u32(self._nonfinite),
            shadow=shadow,
        )
        self._next_seq = (self._next_seq + 1) % (U32_MAX + 1)
        self._start_s = end_s if reopen else None
        self._reset()
        return window

    def close(
        self,
        end_s: float,
        *,
        battery_pct: float | None = None,
        battery_mv: int | None = None,
        charging: bool = False,
        est_battery_life_min: int | None = None,
        shadow_candidate_version: int | None = None,
        reopen: bool = True,
    ) -> schemas.MetricsWindow:
        """:meth:`close_record`, returned as the pydantic :class:`telemetry.schemas.MetricsWindow`
        (server-side and existing callers; imports pydantic on first use)."""
        from telemetry.schemas import MetricsWindow  # here, not at module import: see module doc

        record = self.close_record(
            end_s,
            battery_pct=battery_pct,
            battery_mv=battery_mv,
            charging=charging,
            est_battery_life_min=est_battery_life_min,
            shadow_candidate_version=shadow_candidate_version,
            reopen=reopen,
        )
        return MetricsWindow.model_validate(dc.as_dict(record))


# ----------------------------------------------------------------------------- server side


@dataclass
class CohortTotals:
    """Sums over a cohort's windows; rates are recomputed from the sums, never averaged."""

    windows: int = 0
    devices: int = 0
    duplicates_dropped: int = 0
    window_s: int = 0
    active_s: float = 0.0
    inferences: int = 0
    positives: int = 0
    false_positives: int = 0
    fallback_inferences: int = 0  # inferences in windows that closed at fallback_level > 0
    latency_max_us: int = 0
    latency_p95_weighted_us: float = 0.0  # inference-weighted mean of window p95s (an approximation)
    input_hist: dict[int, list[int]] = field(default_factory=dict)  # input_feature -> summed counts
    output_hist: list[int] = field(default_factory=list)
    shadow_samples: int = 0
    shadow_agreements: int = 0
    candidate_positives: int = 0
    candidate_false_positives: int = 0
    battery_drain_pct_per_h: float | None = None  # mean over devices with >= 2 discharging reports

    @property
    def duty_cycle(self) -> float | None:
        return self.active_s / self.window_s if self.window_s else None

    @property
    def positive_rate(self) -> float | None:
        return self.positives / self.inferences if self.inferences else None

    @property
    def false_positive_ratio(self) -> float | None:
        """False positives / positives: the share of positive decisions feedback marked wrong."""
        return self.false_positives / self.positives if self.positives else None

    @property
    def fallback_rate(self) -> float | None:
        return self.fallback_inferences / self.inferences if self.inferences else None

    @property
    def shadow_agreement(self) -> float | None:
        return self.shadow_agreements / self.shadow_samples if self.shadow_samples else None

    @property
    def candidate_false_positive_ratio(self) -> float | None:
        return self.candidate_false_positives / self.candidate_positives if self.candidate_positives else None


def _add_hist(total: list[int], counts: Sequence[int], what: str) -> list[int]:
    if not total:
        return list(counts)
    if len(total) != len(counts):
        raise AggregationError(
            f"{what} has {len(counts)} bins, other windows of the cohort have {len(total)}"
        )
    return [a + b for a, b in zip(total, counts, strict=True)]


def merge_windows(windows: Iterable[AnyWindow]) -> CohortTotals:
    """Cohort totals for the rollout gates. Duplicate (device_id, seq) windows are counted once.
    Takes pydantic windows (server) or device records alike."""
    t = CohortTotals()
    seen: set[tuple[str, int]] = set()
    battery: dict[str, list[tuple[int, int, float, bool]]] = defaultdict(list)
    p95_sum = 0.0
    for w in windows:
        key = (w.device_id, w.seq)
        if key in seen:
            t.duplicates_dropped += 1
            continue
        seen.add(key)
        t.windows += 1
        t.window_s += w.window_len_s
        t.active_s += w.duty_cycle * w.window_len_s
        t.inferences += w.inferences
        t.positives += w.positives
        t.false_positives += w.false_positives
        if w.fallback_level > 0:
            t.fallback_inferences += w.inferences
        t.latency_max_us = max(t.latency_max_us, w.latency_max_us)
        p95_sum += w.latency_p95_us * w.inferences
        if w.input_hist:
            t.input_hist[w.input_feature] = _add_hist(
                t.input_hist.get(w.input_feature, []), w.input_hist, f"input_hist[{w.input_feature}] of {key}"
            )
        if w.output_hist:
            t.output_hist = _add_hist(t.output_hist, w.output_hist, f"output_hist of {key}")
        if w.shadow is not None:
            t.shadow_samples += w.shadow.samples
            t.shadow_agreements += w.shadow.agreements
            t.candidate_positives += w.shadow.candidate_positives
            t.candidate_false_positives += w.shadow.candidate_false_positives
        if w.battery_pct is not None:
            battery[w.device_id].append((w.seq, w.window_end_s, w.battery_pct, w.charging))
    t.devices = len({d for d, _ in seen})
    t.latency_p95_weighted_us = p95_sum / t.inferences if t.inferences else 0.0
    t.battery_drain_pct_per_h = _battery_drain(battery)
    return t


def _battery_drain(reports: dict[str, list[tuple[int, int, float, bool]]]) -> float | None:
    """Per device: sum of % drops over hours between consecutive discharging reports; mean over devices."""
    rates: list[float] = []
    for series in reports.values():
        series.sort()
        drop = 0.0
        hours = 0.0
        for (_, t0, p0, c0), (_, t1, p1, c1) in pairwise(series):
            if c0 or c1 or t1 <= t0:
                continue  # charging in between, or out-of-order clocks: no drain figure
            drop += p0 - p1
            hours += (t1 - t0) / 3600
        if hours > 0:
            rates.append(drop / hours)
    return sum(rates) / len(rates) if rates else None


SeqVerdict = Literal["new", "duplicate", "gap", "late"]


@dataclass(frozen=True)
class SeqResult:
    verdict: SeqVerdict
    missing: int = 0  # for "gap": how many sequence numbers were skipped


class SequenceTracker:
    """Per-device sequence bookkeeping for ingest: de-duplication and gap detection.

    ``new``: the next expected number (or the first seen); ``gap``: ahead of the expected one, the
    skipped numbers are remembered (bounded) as missing; ``late``: a number remembered as missing
    arrives (replay from the device's disk buffer); ``duplicate``: anything else at or below the
    highest seen. The tracker is in-memory; the server's database remains the record.
    """

    def __init__(self, max_missing_per_device: int = 1024) -> None:
        self._next: dict[str, int] = {}
        self._missing: dict[str, set[int]] = defaultdict(set)
        self._max_missing = max_missing_per_device

    def observe(self, device_id: str, seq: int) -> SeqResult:
        expected = self._next.get(device_id)
        if expected is None or seq == expected:
            self._next[device_id] = seq + 1
            return SeqResult("new")
        if seq > expected:
            missing = self._missing[device_id]
            for s in range(max(expected, seq - self._max_missing), seq):
                missing.add(s)
            while len(missing) > self._max_missing:
                missing.discard(min(missing))
            self._next[device_id] = seq + 1
            return SeqResult("gap", missing=seq - expected)
        if seq in self._missing[device_id]:
            self._missing[device_id].discard(seq)
            return SeqResult("late")
        return SeqResult("duplicate")

    def missing(self, device_id: str) -> list[int]:
        return sorted(self._missing.get(device_id, ()))
