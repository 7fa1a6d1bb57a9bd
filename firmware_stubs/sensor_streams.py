"""Seeded sensor streams: model-ready input windows with ground truth, drift, bursts, faults, feedback.

A stream draws from a :class:`WindowPool` (arrays of windows + labels + event flags supplied by a
task-specific provider, see ``firmware_stubs.sensors``). Sample ``i`` depends only on the seed, ``i``
and the simulated time it is read at (each sample has its own generator seeded ``(seed, i)``), so a
run is reproducible and two streams with the same seed agree sample for sample until an injection
makes them differ.

Injections take effect from a simulated time (seconds since the stream started):

- drift: read windows from an aligned ``drifted`` pool (e.g. the same recording at a higher noise
  floor) and/or transform them in feature space: ``x * scale + shift + N(0, noise_std)``, clipped to
  the stream's value range;
- burst: a stretch of time with a different event fraction (e.g. every window an event);
- fault: the sensor outputs NaN or a constant for a while (or for good).

Feedback: when the agent says it acted on a sample (a detection), a false positive (ground truth:
not an event) is reported back with probability ``report_probability`` after ``delay_s``, as users
report some false wakes; true detections are never reported.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from firmware_stubs.checked import Checked, SpecError, spec

SamplingMode = Literal["random", "sequential"]
# How many issued samples the stream remembers for feedback (bounded memory over long runs).
GROUND_TRUTH_MEMORY = 100_000


@dataclass(frozen=True)
class WindowPool:
    """Model-ready windows (float32, shape (n, *input_shape)) with labels and event flags."""

    windows: np.ndarray
    labels: np.ndarray
    is_event: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        w = np.ascontiguousarray(self.windows, dtype=np.float32)
        labels = np.asarray(self.labels)
        events = np.asarray(self.is_event)
        if w.ndim < 2 or w.shape[0] == 0:
            raise ValueError(f"pool {self.name!r}: windows must have shape (n >= 1, ...), got {w.shape}")
        if labels.shape != (w.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"pool {self.name!r}: labels must be {w.shape[0]} integers, got "
                f"shape {labels.shape} dtype {labels.dtype}"
            )
        if events.shape != (w.shape[0],) or events.dtype != np.bool_:
            raise ValueError(
                f"pool {self.name!r}: is_event must be {w.shape[0]} booleans, got "
                f"shape {events.shape} dtype {events.dtype}"
            )
        if not np.all(np.isfinite(w)):
            raise ValueError(f"pool {self.name!r}: windows contain NaN or infinity")
        for arr in (w, labels, events):
            arr.setflags(write=False)
        object.__setattr__(self, "windows", w)
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        object.__setattr__(self, "is_event", events)

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.windows.shape[1:])

    def aligned_with(self, other: WindowPool) -> bool:
        """Same windows positions: same shape, labels and events (e.g. one recording at two noise floors)."""
        return (
            self.windows.shape == other.windows.shape
            and np.array_equal(self.labels, other.labels)
            and np.array_equal(self.is_event, other.is_event)
        )


@dataclass(frozen=True)
class StreamPools:
    """What a task provider returns: the nominal pool and, optionally, an aligned drifted one."""

    nominal: WindowPool
    drifted: WindowPool | None = None
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.drifted is not None and not self.nominal.aligned_with(self.drifted):
            raise ValueError(
                f"drifted pool {self.drifted.name!r} is not aligned with {self.nominal.name!r} "
                "(it must hold the same positions: same shape, labels and events)"
            )


# Settings records are validated dataclasses (firmware_stubs.checked), not pydantic models: the simulated
# board runs in the device agent's process, which cannot afford pydantic's ~15 MB.


@dataclass(frozen=True, kw_only=True)
class FeedbackSpec(Checked):
    report_probability: float = spec(1.0, ge=0, le=1)
    delay_s: float = spec(0.0, ge=0)


@dataclass(frozen=True, kw_only=True)
class StreamConfig(Checked):
    seed: int = 0
    # Fraction of windows that hold an event; None = the pool's own mix (random) or order (sequential).
    event_fraction: float | None = spec(None, ge=0, le=1)
    mode: SamplingMode = "random"
    # Range drifted values are clipped to (the model's input range); None = no clipping.
    value_range: tuple[float, float] | None = (0.0, 1.0)
    feedback: FeedbackSpec = field(default_factory=FeedbackSpec)

    def _validate(self) -> None:
        if self.value_range is not None and not self.value_range[0] < self.value_range[1]:
            raise SpecError("value_range", f"{self.value_range} must be (low, high) with low < high")
        if self.mode == "sequential" and self.event_fraction is not None:
            raise SpecError(
                "mode", "sequential mode replays the pool in order; event_fraction needs mode='random'"
            )


@dataclass(frozen=True, kw_only=True)
class DriftSpec(Checked):
    start_s: float = spec(ge=0)  # simulated seconds since the stream started
    use_drifted_pool: bool = False
    shift: float = spec(0.0)
    scale: float = spec(1.0, gt=0)
    noise_std: float = spec(0.0, ge=0)

    def _validate(self) -> None:
        if not self.use_drifted_pool and self.shift == 0 and self.scale == 1 and self.noise_std == 0:
            raise SpecError("drift", "drift changes nothing: set use_drifted_pool, shift, scale or noise_std")


@dataclass(frozen=True, kw_only=True)
class BurstSpec(Checked):
    start_s: float = spec(ge=0)  # simulated seconds since the stream started
    duration_s: float = spec(gt=0)
    event_fraction: float = spec(1.0, ge=0, le=1)


@dataclass(frozen=True, kw_only=True)
class FaultSpec(Checked):
    kind: Literal["nan", "constant"]
    start_s: float = spec(ge=0)  # simulated seconds since the stream started
    duration_s: float | None = spec(None, gt=0)  # None: the sensor stays broken
    value: float = spec(0.0)  # the constant a "constant" fault outputs


def _active(start_s: float, duration_s: float | None, t_s: float) -> bool:
    return t_s >= start_s and (duration_s is None or t_s < start_s + duration_s)


@dataclass(frozen=True)
class SensorSample:
    """One model-ready input window and what the simulator knows about it.

    ``label``/``is_event`` are ground truth (None on a real board, where nobody knows). ``injected``
    names the injections that shaped this sample (e.g. ``("drift", "fault:nan")``), for analysis only.
    """

    window: np.ndarray
    index: int
    t_s: float  # monotonic seconds since the stream started
    timestamp: float  # wall-clock epoch seconds
    label: int | None
    is_event: bool | None
    injected: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Feedback:
    """A user's report about a detection the device acted on."""

    sample_index: int
    false_positive: bool
    reported_at_s: float


class SensorStream:
    """A seeded stream over task pools. Single-threaded; times must not go back."""

    def __init__(self, pools: StreamPools, config: StreamConfig | None = None) -> None:
        self.pools = pools
        self.config = config if config is not None else StreamConfig()
        self._event_idx = np.flatnonzero(pools.nominal.is_event)
        self._other_idx = np.flatnonzero(~pools.nominal.is_event)
        self._check_fraction(self.config.event_fraction, "event_fraction")
        self._drifts: list[DriftSpec] = []
        self._bursts: list[BurstSpec] = []
        self._faults: list[FaultSpec] = []
        self._next_index = 0
        self._last_t = 0.0
        self._truth: OrderedDict[int, bool] = OrderedDict()
        self._reported: set[int] = set()
        self._pending: list[tuple[float, Feedback]] = []  # (due time, report)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.pools.nominal.input_shape

    @property
    def samples_read(self) -> int:
        return self._next_index

    def _check_fraction(self, fraction: float | None, what: str) -> None:
        if fraction is None:
            return
        name = self.pools.nominal.name
        if fraction > 0 and self._event_idx.size == 0:
            raise ValueError(f"{what}={fraction} but pool {name!r} holds no event windows")
        if fraction < 1 and self._other_idx.size == 0:
            raise ValueError(f"{what}={fraction} but pool {name!r} holds only event windows")

    # -- injections ----------------------------------------------------------------------------

    def inject_drift(self, drift: DriftSpec) -> None:
        if drift.use_drifted_pool and self.pools.drifted is None:
            raise ValueError(
                f"pool {self.pools.nominal.name!r} has no drifted pool; "
                "drift it in feature space (shift, scale, noise_std) instead"
            )
        self._drifts.append(drift)
        self._drifts.sort(key=lambda d: d.start_s)

    def inject_burst(self, burst: BurstSpec) -> None:
        self._check_fraction(burst.event_fraction, "burst event_fraction")
        self._bursts.append(burst)

    def inject_fault(self, fault: FaultSpec) -> None:
        self._faults.append(fault)

    # -- reading -------------------------------------------------------------------------------

    def _check_time(self, t_s: float) -> float:
        t = float(t_s)
        if not math.isfinite(t) or t < self._last_t:
            raise ValueError(f"stream time must be finite and not go back (was {self._last_t}, got {t_s!r})")
        self._last_t = t
        return t

    def _choose(self, index: int, t_s: float, rng: np.random.Generator) -> tuple[int, tuple[str, ...]]:
        burst = next((b for b in self._bursts if _active(b.start_s, b.duration_s, t_s)), None)
        fraction = burst.event_fraction if burst is not None else self.config.event_fraction
        tags = ("burst",) if burst is not None else ()
        if fraction is None:
            n = len(self.pools.nominal)
            return (index % n if self.config.mode == "sequential" else int(rng.integers(n))), tags
        subset = self._event_idx if rng.random() < fraction else self._other_idx
        return int(subset[rng.integers(subset.size)]), tags

    def read(self, t_s: float, timestamp: float | None = None) -> SensorSample:
        """The next window, as seen at ``t_s`` simulated seconds since the stream started."""
        t = self._check_time(t_s)
        index = self._next_index
        self._next_index += 1
        rng = np.random.default_rng([self.config.seed, index])
        pos, tags = self._choose(index, t, rng)
        drifts = [d for d in self._drifts if t >= d.start_s]
        pool = self.pools.nominal
        if self.pools.drifted is not None and any(d.use_drifted_pool for d in drifts):
            pool = self.pools.drifted
        window = np.array(pool.windows[pos], dtype=np.float32)
        transforms = [d for d in drifts if d.shift != 0 or d.scale != 1 or d.noise_std != 0]
        for d in transforms:
            window = window * np.float32(d.scale) + np.float32(d.shift)
            if d.noise_std > 0:
                window = window + rng.normal(0.0, d.noise_std, size=window.shape).astype(np.float32)
        if transforms and self.config.value_range is not None:
            window = np.clip(window, *self.config.value_range).astype(np.float32)
        if drifts:
            tags = (*tags, "drift")
        fault = next((f for f in self._faults if _active(f.start_s, f.duration_s, t)), None)
        if fault is not None:
            window.fill(np.nan if fault.kind == "nan" else fault.value)
            tags = (*tags, f"fault:{fault.kind}")
        is_event = bool(self.pools.nominal.is_event[pos])
        self._remember(index, is_event)
        return SensorSample(
            window=window,
            index=index,
            t_s=t,
            timestamp=t if timestamp is None else float(timestamp),
            label=int(self.pools.nominal.labels[pos]),
            is_event=is_event,
            injected=tags,
        )

    def _remember(self, index: int, is_event: bool) -> None:
        self._truth[index] = is_event
        if len(self._truth) > GROUND_TRUTH_MEMORY:
            old, _ = self._truth.popitem(last=False)
            self._reported.discard(old)

    # -- feedback ------------------------------------------------------------------------------

    def report_detection(self, sample_index: int, t_s: float) -> None:
        """The agent acted on sample ``sample_index`` (it judged it positive) at ``t_s``.

        Reporting the same sample twice has no further effect.
        """
        if isinstance(sample_index, bool) or not isinstance(sample_index, int | np.integer):
            raise ValueError(f"sample_index must be an integer, got {sample_index!r}")
        idx = int(sample_index)
        if idx not in self._truth:
            issued = f"0..{self._next_index - 1}" if self._next_index else "none yet"
            raise ValueError(
                f"sample {idx} was never read or is too old to remember "
                f"(issued: {issued}; the last {GROUND_TRUTH_MEMORY} are kept)"
            )
        t = float(t_s)
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"detection time must be a finite number of seconds >= 0, got {t_s!r}")
        if idx in self._reported:
            return
        self._reported.add(idx)
        if self._truth[idx]:
            return  # a true detection: users do not report those
        spec = self.config.feedback
        # Its own generator, so whether a report comes does not depend on the order of calls.
        if np.random.default_rng([self.config.seed, idx, 1]).random() < spec.report_probability:
            due = t + spec.delay_s
            self._pending.append((due, Feedback(sample_index=idx, false_positive=True, reported_at_s=due)))

    def poll_feedback(self, t_s: float) -> list[Feedback]:
        """Reports that have arrived by ``t_s``, oldest first; each is returned once."""
        t = float(t_s)
        ready = sorted((p for p in self._pending if p[0] <= t), key=lambda p: (p[0], p[1].sample_index))
        self._pending = [p for p in self._pending if p[0] > t]
        return [fb for _, fb in ready]
