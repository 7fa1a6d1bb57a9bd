"""The device's duty-cycled loop: wake, read the sensor, infer, decide, account, report, sleep.

One :meth:`InferenceLoop.step` is one wake. All time comes from the board's clock, so on a
``SimClock`` an hour of a device runs in well under a second of CPU per few thousand samples.
Energy: the interpreter's measured host time goes to ``Board.record_energy`` (the board scales it by
the profile's ``host_slowdown``); latency in telemetry is that on-device equivalent.

Windows close every ``window_s`` seconds of board time and go to ``sink`` (the MQTT publisher in the
agent, a list in tests) as ``telemetry.device_codec.MetricsWindow`` records. At each close the fallback
policy sees the window and may switch models; switches go to ``event_sink`` as
``telemetry.device_codec.FallbackSwitched`` records. Nothing here imports pydantic.

Hot path (:meth:`InferenceLoop.process`): per sample only what decides the sample (a finiteness check
of the input: one contiguous sum, the exact summary only when that sum is not finite; the invoke; the
decision; the energy accounting) and appends to buffers (latency, active time, the input sample, the
score row). The input feature summaries (``converters.baselines.feature_summary``, its exact
arithmetic, batched), both histograms and the latency reservoir are computed from those buffers when a
window closes or a buffer fills (:meth:`InferenceLoop._flush`); the window is identical to one fed
sample by sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from converters.baselines import feature_summary
from device_agent.config import LoopConfig
from device_agent.fallback import FallbackEvent, FallbackPolicy, SwitchReason, WindowObservation
from device_agent.model_manager import Inference, LoadedModel, ModelManager, TaskRule
from device_agent.report_reader import DeviceReport
from device_agent.runtime.base import InvokeError, ModelDoesNotFit, ModelLoadError
from device_agent.shadow import ShadowOutcome, ShadowRunner
from firmware_stubs.board import Board
from firmware_stubs.sensor_streams import SensorSample
from telemetry.aggregation import DEFAULT_SCORE_EDGES, WindowAggregator
from telemetry.device_codec import FallbackSwitched, MetricsWindow, ModelRef
from telemetry.wire import MAX_HIST_BINS

if TYPE_CHECKING:
    from telemetry import schemas

WindowSink = Callable[[MetricsWindow], None]
EventSink = Callable[[FallbackSwitched], None]

# Input samples buffered before their summaries are computed in one batch: at most this many, and at
# most _BUFFER_BYTES of them (a 96x96 image input must not cost megabytes of RSS).
_BUFFER_ROWS = 256
_BUFFER_BYTES = 256 * 1024


@dataclass
class LoopStats:
    steps: int = 0
    inferences: int = 0
    positives: int = 0
    suppressed_positives: int = 0
    nonfinite_inputs: int = 0
    invoke_failures: int = 0
    false_positive_reports: int = 0
    windows: int = 0
    switches: int = 0
    shadow_failures: int = 0
    unattributed_samples: list[int] = field(default_factory=list)  # invoke failed on every level


@dataclass(frozen=True)
class StepResult:
    sample_index: int
    positive: bool
    score: float | None  # None: not inferred (non-finite input or every model failed)
    model: str | None  # label of the model that served the sample
    generation: int | None
    shadow: ShadowOutcome | None = None  # the candidate's run on this sample, when it was in the share


def model_record(model: LoadedModel) -> ModelRef:
    """The model reference as the pydantic-free telemetry record (what the loop's messages carry)."""
    a = model.artifact
    return ModelRef(name=a.name[:24], version=a.version, variant=a.variant)


def model_ref(model: LoadedModel) -> schemas.ModelRef:
    """The pydantic ``telemetry.schemas.ModelRef`` (kept for callers building pydantic messages; imports
    pydantic — the device path uses :func:`model_record`)."""
    from telemetry.schemas import ModelRef as PydanticModelRef

    a = model.artifact
    return PydanticModelRef(name=a.name[:24], version=a.version, variant=a.variant)  # type: ignore[arg-type]


def bin_counts(values: np.ndarray, edges: Sequence[float]) -> list[int]:
    """Per-bin counts of finite ``values`` with ``telemetry.aggregation.bin_index``'s rule (bins
    ``[e_i, e_i+1)``, last bin closed, out-of-range values in the outer bins), vectorised."""
    e = np.asarray(edges, dtype=np.float64)
    nb = e.size - 1
    idx = np.searchsorted(e, np.asarray(values, dtype=np.float64), side="right") - 1
    return np.bincount(np.clip(idx, 0, nb - 1), minlength=nb).tolist()


def choose_input_feature(report: DeviceReport) -> int:
    """The baseline feature with the most bins (most informative histogram); first on ties."""
    feats = report.baselines.features
    return max(range(len(feats)), key=lambda i: (len(feats[i].edges), -i))


class InferenceLoop:
    def __init__(
        self,
        board: Board,
        manager: ModelManager,
        *,
        device_id: str,
        sink: WindowSink,
        event_sink: EventSink | None = None,
        policy: FallbackPolicy | None = None,
        config: LoopConfig | None = None,
        first_seq: int = 0,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
        rule: TaskRule | None = None,
    ) -> None:
        self.board = board
        self.manager = manager
        self.device_id = device_id
        self.sink = sink
        self.event_sink = event_sink if event_sink is not None else (lambda _e: None)
        self.policy = policy if policy is not None else FallbackPolicy(len(manager.chain))
        self.config = config if config is not None else LoopConfig()
        self.preprocess = preprocess
        # An explicit rule (given here or assigned to .rule later, e.g. a device-specific threshold) is
        # kept; otherwise the active chain level's calibrated threshold applies and follows every swap.
        self._rule_pinned = False
        if rule is not None:
            self.rule = rule
        else:
            self._set_rule(manager.chain.rule)
        self.stats = LoopStats()
        self.shadow: ShadowRunner | None = None
        self._first_seq = first_seq
        self._agg: WindowAggregator | None = None
        self._generation = -1
        self._edges_key: tuple | None = None
        self._window_start_mono = 0.0
        self._last_positive_t: float | None = None
        self._last_battery: tuple[float, float] | None = None  # (monotonic s, pct) at the last close
        # Hot-path buffers, emptied into the aggregator by _flush (see module doc).
        self._lat: list[int] = []  # per recorded sample, in order: on-device latency (0: not inferred)
        self._act: list[float] = []  # active seconds, same order
        self._pos = 0
        self._nonfinite = 0
        self._xbuf: np.ndarray | None = None  # input samples with a finite summary, float64
        self._nx = 0
        self._sbuf: np.ndarray | None = None  # score rows of successful inferences
        self._ns = 0
        self._input_shape: tuple[int, ...] = ()
        self._xrows = 0

    @property
    def rule(self) -> TaskRule:
        return self._rule

    @rule.setter
    def rule(self, rule: TaskRule) -> None:
        self._rule_pinned = True
        self._set_rule(rule)

    def _set_rule(self, rule: TaskRule) -> None:
        # The decision's inputs, resolved once (TaskRule.positive_score's arithmetic, without its list
        # -> array conversion per call).
        self._rule = rule
        ids = rule.positive_class_ids
        self._pos_ids = np.asarray(ids, dtype=np.intp) if ids else None
        self._threshold = rule.score_threshold

    # -- set-up ----------------------------------------------------------------------------------

    def start(self) -> LoadedModel:
        """Load the first model of the chain that loads here and open the first window."""
        model, failures = self.manager.start()
        for level, exc in failures:
            reason = SwitchReason.MEMORY if isinstance(exc, ModelDoesNotFit) else SwitchReason.LOAD_FAILED
            self.policy.mark_unusable(level, reason, str(exc))
        assert model.level is not None
        self.policy.follow(model.level)
        if failures:
            first_level, first_exc = failures[0]
            reason = (
                SwitchReason.MEMORY if isinstance(first_exc, ModelDoesNotFit) else SwitchReason.LOAD_FAILED
            )
            self._emit(FallbackEvent(first_level, model.level, reason, str(first_exc)), model)
        self._window_start_mono = self.board.clock.monotonic()
        self._sync_model(force=True)
        return model

    def _aggregator_for(self, model: LoadedModel, first_seq: int) -> WindowAggregator:
        self._flush()  # buffered samples go with the spec and edges they were taken under
        base = model.artifact.report.baselines
        k = self.config.input_feature
        if k is None or k >= len(base.features):
            k = choose_input_feature(model.artifact.report)
        self._feature = k
        spec = self._feature_spec = base.feature_spec
        self._score_ids = np.asarray(base.output_score_spec.class_ids, dtype=np.intp)
        self._input_shape = tuple(spec.input_shape)
        row_bytes = 8 * max(1, math.prod(self._input_shape))
        rows = max(1, min(_BUFFER_ROWS, _BUFFER_BYTES // row_bytes))
        self._xbuf = np.empty((rows, *self._input_shape), dtype=np.float64)
        self._xrows = rows
        out_edges = base.output_score.edges if len(base.output_score.edges) <= MAX_HIST_BINS + 1 else None
        in_edges = base.features[k].edges
        self._edges_key = (tuple(in_edges), tuple(out_edges or ()), k)
        return WindowAggregator(
            self.device_id,
            model_record(model),
            input_edges=in_edges,
            output_edges=out_edges or DEFAULT_SCORE_EDGES,
            input_feature=k,
            first_seq=first_seq,
        )

    def _sync_model(self, *, force: bool = False) -> LoadedModel:
        """Follow a swap made by anyone (policy, OTA, revert): new model ref; new bins if they changed."""
        model, generation = self.manager.snapshot()
        if model is None:
            raise ModelLoadError("no active model")
        if generation == self._generation and not force:
            return model
        self._generation = generation
        self._flush()  # buffered samples belong to the previous model's binning and feature spec
        if model.level is not None and model.level != self.policy.level:
            self.policy.follow(model.level)
        level = model.level if model.level is not None else 0
        if not self._rule_pinned:
            self._set_rule(self.manager.rule_for(model.level))
        if self._agg is None:
            self._agg = self._aggregator_for(model, self._first_seq)
            self._agg.open(self.board.clock.now())
        else:
            old_key = self._edges_key
            self._aggregator_for(model, self._agg.next_seq)  # sets _edges_key for the new model
            if self._edges_key != old_key:  # other baseline bins: a window must not mix two binnings
                self._close_window()
                # Numbered after the window just closed (``fresh`` took its seq before the close).
                self._agg = self._aggregator_for(model, self._agg.next_seq)
                self._agg.open(self.board.clock.now())
        self._agg.set_model(model_record(model), min(level, 15))
        return model

    # -- the loop ----------------------------------------------------------------------------------

    def run(self, *, steps: int | None = None, until_s: float | None = None) -> LoopStats:
        """Run ``steps`` wakes, or until the board's monotonic clock reaches ``until_s``."""
        if steps is None and until_s is None:
            raise ValueError("give steps or until_s")
        n = 0
        while (steps is None or n < steps) and (until_s is None or self.board.clock.monotonic() < until_s):
            self.step()
            n += 1
        return self.stats

    def step(self) -> StepResult:
        clock = self.board.clock
        wake = clock.monotonic()
        self._handle_feedback()
        sample = self.board.read_sensor()
        result = self.process(sample)
        if clock.monotonic() - self._window_start_mono >= self.config.window_s:
            self._close_window()
        clock.sleep(max(0.0, wake + self.config.sample_period_s - clock.monotonic()))
        return result

    def process(self, sample: SensorSample) -> StepResult:
        """Infer one sample and account it (everything of a step except feedback, windows and sleep).

        The hot path: no per-sample histogramming, summaries or allocation beyond the runtime's own.
        """
        stats = self.stats
        stats.steps += 1
        model = self._sync_model()
        x = sample.window if self.preprocess is None else self.preprocess(sample.window)
        if type(x) is not np.ndarray or x.shape != self._input_shape:
            x = self._checked_input(x)
        # Is feature k's summary finite? A finite float32 sum of the whole sample means every value is
        # finite (NaN/inf propagate through sums), and float64 means of finite <= 32-bit values cannot
        # overflow, so the summary is finite too: one contiguous reduction instead of the summary.
        # Anything else (a non-finite value somewhere, a float32 overflow, float64 input) takes the
        # exact path: the summary itself, as converters computes it.
        dt = x.dtype
        finite = dt.kind in "iub" or (dt.itemsize <= 4 and math.isfinite(np.add.reduce(x, None)))
        if not finite:
            finite = math.isfinite(float(feature_summary(x, self._feature_spec)[self._feature]))
        lat, act = self._lat, self._act
        if not finite:  # a sensor fault: nothing sensible to infer on
            stats.nonfinite_inputs += 1
            self._nonfinite += 1
            lat.append(0)
            act.append(0.0)
            if len(lat) >= _BUFFER_ROWS or self._nx == self._xrows:
                self._flush()
            return StepResult(sample.index, False, None, None, None)
        inference = self._infer(x, sample.index)  # may switch models (and so flush the buffers)
        if inference is None:
            self._buffer_input(x)
            lat.append(0)
            act.append(0.0)
            if len(lat) >= _BUFFER_ROWS or self._nx == self._xrows:
                self._flush()
            return StepResult(sample.index, False, None, None, None)
        if inference.model is not model:
            self._sync_model()
        scores = inference.scores
        ids = self._pos_ids
        score = float(scores.max() if ids is None else scores[ids].max())
        positive = score >= self._threshold
        if positive:
            rule = self.rule
            last = self._last_positive_t
            if rule.suppression_s is not None and last is not None and sample.t_s - last < rule.suppression_s:
                positive = False
                stats.suppressed_positives += 1
            else:
                self._last_positive_t = sample.t_s
                self.board.report_detection(sample.index)
                stats.positives += 1
                self._pos += 1
        use = self.board.record_energy(active_seconds=inference.invoke_ns / 1e9)
        active = use.device_active_s
        sbuf = self._sbuf
        if sbuf is None or sbuf.shape[1:] != scores.shape or sbuf.dtype != scores.dtype:
            sbuf = self._score_buffer(scores)
        sbuf[self._ns] = scores
        self._ns += 1
        self._buffer_input(x)
        lat.append(round(active * 1e6))
        act.append(active)
        stats.inferences += 1
        if len(lat) >= _BUFFER_ROWS or self._nx == self._xrows:
            self._flush()
        outcome = self._run_shadow(sample.index, x, positive, inference.invoke_ns) if self.shadow else None
        return StepResult(sample.index, positive, score, inference.model.label, inference.generation, outcome)

    def _buffer_input(self, x: np.ndarray) -> None:
        """Keep the sample for its summary at flush time (with the lat/act append of the same sample)."""
        xbuf = self._xbuf
        assert xbuf is not None
        if x.shape != xbuf.shape[1:]:  # a switch to a model of another input shape: not binnable
            return
        xbuf[self._nx] = x
        self._nx += 1

    def _checked_input(self, x: object) -> np.ndarray:
        arr = np.asarray(x)
        if arr.shape != self._input_shape:
            raise ValueError(f"expected samples of shape {self._input_shape}, got array of shape {arr.shape}")
        return arr

    def _score_buffer(self, scores: np.ndarray) -> np.ndarray:
        self._flush()  # rows of another shape (another model) are binned first
        self._sbuf = np.empty((_BUFFER_ROWS, *scores.shape), dtype=scores.dtype)
        return self._sbuf

    def _flush(self) -> None:
        """Summaries, histograms and latencies of the buffered samples into the aggregator, in one batch."""
        lat = self._lat
        if not lat:
            return
        agg = self._agg
        assert agg is not None
        in_counts = out_counts = None
        nonfinite = self._nonfinite
        if self._nx and agg.input_edges is not None:
            assert self._xbuf is not None
            values = feature_summary(self._xbuf[: self._nx], self._feature_spec)[:, self._feature]
            finite = np.isfinite(values)
            nonfinite += int(values.size - np.count_nonzero(finite))  # never, by the hot path's check
            in_counts = bin_counts(values[finite], agg.input_edges)
        if self._ns and agg.output_edges is not None:
            assert self._sbuf is not None
            out = self._sbuf[: self._ns][:, self._score_ids].max(axis=1).astype(np.float64)
            out_counts = bin_counts(out[np.isfinite(out)], agg.output_edges)
        agg.record_batch(
            lat,
            self._pos,
            self._act,
            input_counts=in_counts,
            output_counts=out_counts,
            nonfinite_inputs=nonfinite,
        )
        self._lat, self._act = [], []
        self._pos = self._nonfinite = self._nx = self._ns = 0

    def _infer(self, x: np.ndarray, index: int) -> Inference | None:
        """Infer on the active model; on invoke failure let the policy step down and retry the same
        sample on the new model, so a failing model loses no sample while a fallback exists."""
        while True:
            try:
                inference = self.manager.infer(x)
            except InvokeError as exc:
                self.stats.invoke_failures += 1
                event = self.policy.on_invoke_failure(str(exc))
                if event is None or not self._switch(event):
                    self.stats.unattributed_samples.append(index)
                    return None
                continue
            self.policy.on_invoke_success()
            return inference

    def _run_shadow(self, index: int, x: np.ndarray, positive: bool, active_ns: int) -> ShadowOutcome | None:
        shadow, agg = self.shadow, self._agg
        assert shadow is not None and agg is not None
        shadow.observe_active(active_ns)
        try:
            outcome = shadow.run(index, x, positive)
        except InvokeError:
            self.stats.shadow_failures += 1
            return None
        if outcome is None:
            return None
        use = self.board.record_energy(active_seconds=outcome.invoke_ns / 1e9)
        shadow.add_energy(use.charge_mah)
        agg.record_shadow(outcome.agreed, outcome.candidate_positive, round(use.device_active_s * 1e6))
        return outcome

    def _handle_feedback(self) -> None:
        agg = self._agg
        assert agg is not None
        for fb in self.board.poll_feedback():
            if not fb.false_positive:
                continue
            self.stats.false_positive_reports += 1
            agg.record_false_positive()
            if self.shadow is not None and self.shadow.on_false_positive(fb.sample_index):
                agg.record_candidate_false_positive()

    # -- windows and switches ---------------------------------------------------------------------

    def _close_window(self) -> MetricsWindow | None:
        agg = self._agg
        assert agg is not None
        clock = self.board.clock
        mono, now = clock.monotonic(), clock.now()
        if mono - self._window_start_mono <= 0:
            return None
        self._flush()
        battery = self.board.battery()
        life_min = None
        if self._last_battery is not None and not battery.charging:
            t0, pct0 = self._last_battery
            rate = (pct0 - battery.percent) / max(mono - t0, 1e-9)  # percent per second
            if rate > 0:
                life_min = min(int(battery.percent / rate / 60), 4_294_967_295)
        self._last_battery = (mono, battery.percent)
        window = agg.close_record(
            now,
            battery_pct=battery.percent,
            battery_mv=min(round(battery.voltage * 1000), 65_535),
            charging=battery.charging,
            est_battery_life_min=life_min,
            shadow_candidate_version=self.shadow.candidate_version if self.shadow is not None else None,
        )
        self._window_start_mono = mono
        self.stats.windows += 1
        self.sink(window)
        event = self.policy.observe_window(
            WindowObservation(
                inferences=window.inferences,
                latency_p95_us=window.latency_p95_us,
                positives=window.positives,
                false_positives=window.false_positives,
                battery_pct=window.battery_pct,
                charging=window.charging,
            )
        )
        if event is not None:
            self._switch(event)
        return window

    def close_window(self) -> MetricsWindow | None:
        """Close the open window now (e.g. before the agent stops)."""
        return self._close_window()

    def _switch(self, event: FallbackEvent) -> bool:
        """Load the event's target first (the active model stays on failure), then swap and report."""
        origin = event
        target: int | None = event.to_level
        notes: list[str] = []
        while target is not None:
            try:
                model = self.manager.load_level(target)
            except ModelLoadError as exc:
                reason = SwitchReason.MEMORY if isinstance(exc, ModelDoesNotFit) else SwitchReason.LOAD_FAILED
                self.policy.mark_unusable(target, reason, str(exc))
                notes.append(f"level {target} did not load: {exc}")
                target = self.policy.next_usable_below(target) if origin.is_step_down else None
                continue
            final = FallbackEvent(
                origin.from_level, target, origin.reason, "; ".join([origin.detail, *notes])
            )
            self.manager.swap(model)
            self.policy.commit(final)
            self._sync_model()
            self._emit(final, model)
            return True
        return False

    def _emit(self, event: FallbackEvent, model: LoadedModel) -> None:
        self.stats.switches += 1
        self.event_sink(event.to_telemetry(self.device_id, int(self.board.clock.now()), model_record(model)))

    # -- shadow mode --------------------------------------------------------------------------------

    def enable_shadow(
        self,
        candidate: LoadedModel,
        *,
        sample_fraction: float,
        candidate_version: int,
        energy_budget_fraction: float | None = None,
    ) -> ShadowRunner:
        self.shadow = ShadowRunner(
            candidate,
            self.rule,
            sample_fraction=sample_fraction,
            candidate_version=candidate_version,
            energy_budget_fraction=energy_budget_fraction,
        )
        return self.shadow

    def disable_shadow(self) -> ShadowRunner | None:
        shadow, self.shadow = self.shadow, None
        return shadow
