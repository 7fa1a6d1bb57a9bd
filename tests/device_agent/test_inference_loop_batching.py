"""The loop's batched input summaries and histograms equal the per-sample computation they replaced.

The hot path buffers samples and computes ``converters.baselines.feature_summary`` over a batch at
window close; the bins are quantiles of exactly that computation, so a batched summary that differed
in the last bit could move a value that sits on a bin edge into the next bin. Real digits data has
many such values; these tests find them and check they land where the per-sample path put them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.baselines import feature_summary
from device_agent import inference_loop
from device_agent.config import LoopConfig
from device_agent.fallback import FallbackPolicy, FallbackThresholds
from device_agent.inference_loop import InferenceLoop, bin_counts
from device_agent.model_manager import ModelArtifact, ModelChain, ModelManager
from firmware_stubs.board import make_simulated_board
from firmware_stubs.hardware_profiles import PI_ZERO_2W
from firmware_stubs.sensor_streams import FaultSpec
from telemetry.aggregation import bin_index


def per_sample_counts(values: list[float], edges: list[float]) -> list[int]:
    """The pre-batching path: one ``bin_index`` per value."""
    counts = [0] * (len(edges) - 1)
    for v in values:
        counts[bin_index(tuple(edges), v)] += 1
    return counts


def test_batched_summaries_and_bins_equal_per_sample_ones_on_real_data(
    chain_dir: Path, digits_eval: tuple[np.ndarray, np.ndarray]
) -> None:
    base = ModelArtifact.from_dir(chain_dir / "wide", PI_ZERO_2W).report.baselines
    xs = digits_eval[0].astype(np.float32)
    batched = feature_summary(xs, base.feature_spec)
    on_edges = 0
    for k, hist in enumerate(base.features):
        single = [float(feature_summary(x, base.feature_spec)[k]) for x in xs]
        assert np.array_equal(batched[:, k], np.array(single)), f"feature {k}: batch arithmetic differs"
        assert bin_counts(batched[:, k], hist.edges) == per_sample_counts(single, hist.edges)
        on_edges += int(np.isin(batched[:, k], hist.edges).sum())
    assert on_edges > 0, "no summary on a bin edge: the test data does not exercise the edge case"


def test_bin_counts_follow_bin_index_on_edges_and_outside() -> None:
    edges = [-1.0, 0.0, 0.25, 1.0]
    values = [*edges, -5.0, 7.0, np.nextafter(0.0, -1.0), np.nextafter(0.25, 1.0), 0.5, 1e300, -1e300]
    assert bin_counts(np.array(values), edges) == per_sample_counts(values, edges)


def _windows(chain_dir: Path, flash: Path, steps: int) -> list:
    board = make_simulated_board(PI_ZERO_2W, task="digits", flash_root=flash)
    board.stream.inject_fault(FaultSpec(kind="nan", start_s=30, duration_s=10))
    chain = ModelChain.from_dir(chain_dir)
    windows: list = []
    loop = InferenceLoop(
        board,
        ModelManager(PI_ZERO_2W, chain),
        device_id="dev-b",
        sink=windows.append,
        policy=FallbackPolicy(len(chain), FallbackThresholds(min_battery_pct=None)),
        config=LoopConfig(sample_period_s=1.0, window_s=49.5),  # .5: boundaries not at the mercy of timing
    )
    loop.start()
    loop.run(steps=steps)
    loop.close_window()
    return windows


def test_window_counts_do_not_depend_on_where_the_buffer_is_flushed(
    chain_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batched = _windows(chain_dir, tmp_path / "a", 160)
    monkeypatch.setattr(inference_loop, "_BUFFER_ROWS", 1)  # flush after every sample: the old path
    one_by_one = _windows(chain_dir, tmp_path / "b", 160)
    key = ("seq", "inferences", "positives", "nonfinite_inputs", "input_feature", "input_hist", "output_hist")
    def rows(ws: list) -> list:
        return [[getattr(w, k) for k in key] for w in ws]

    assert rows(batched) == rows(one_by_one)
    assert sum(w.nonfinite_inputs for w in batched) == 10
    assert sum(w.inferences for w in batched) == 160


def _loop(chain_dir: Path, flash: Path) -> tuple[InferenceLoop, list]:
    board = make_simulated_board(PI_ZERO_2W, task="digits", flash_root=flash)
    chain = ModelChain.from_dir(chain_dir)
    windows: list = []
    loop = InferenceLoop(board, ModelManager(PI_ZERO_2W, chain), device_id="dev-c", sink=windows.append,
                         policy=FallbackPolicy(len(chain), FallbackThresholds(min_battery_pct=None)),
                         config=LoopConfig(sample_period_s=1.0, window_s=1e4))
    loop.start()
    return loop, windows


def test_the_fast_finiteness_check_decides_like_the_summary(chain_dir: Path, tmp_path: Path) -> None:
    """NaN outside the counted feature's inputs: inferred (its summary is finite); NaN inside: counted as
    non-finite, not inferred; huge finite values whose float32 sum overflows: inferred and binned."""
    loop, windows = _loop(chain_dir, tmp_path / "f")
    spec = loop._feature_spec
    k = loop._feature
    base = loop.board.read_sensor()
    lo, hi = spec.group_bounds[k], spec.group_bounds[k + 1]
    axis_len = spec.input_shape[spec.axis]
    outside = next(i for i in range(axis_len) if not lo <= i < hi)

    def at(pos: int, value: float) -> np.ndarray:
        x = base.window.astype(np.float32).copy()
        idx = [0] * x.ndim
        idx[spec.axis] = pos
        x[tuple(idx)] = value
        return x

    cases = {"nan_outside": at(outside, np.nan), "nan_inside": at(lo, np.nan),
             "huge": np.full_like(base.window, 3e38, dtype=np.float32)}
    expected_finite = {
        name: bool(np.isfinite(feature_summary(x, spec)[k])) for name, x in cases.items()
    }
    assert expected_finite == {"nan_outside": True, "nan_inside": False, "huge": True}
    results = {}
    for i, (name, x) in enumerate(cases.items()):
        sample = type(base)(**{**vars(base), "window": x, "index": 1000 + i})
        results[name] = loop.process(sample)
    loop.close_window()
    assert results["nan_inside"].score is None
    assert results["nan_outside"].model is not None and results["huge"].model is not None
    assert windows[0].nonfinite_inputs == 1 and windows[0].inferences == 3
    assert sum(windows[0].input_hist) == 2
