"""The duty-cycled loop on a simulated board with the real interpreters and the real chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.baselines import bin_counts, feature_summary
from device_agent.config import LoopConfig
from device_agent.fallback import FallbackPolicy, FallbackThresholds
from device_agent.inference_loop import InferenceLoop, StepResult
from device_agent.model_manager import ModelArtifact, ModelChain, ModelManager
from device_agent.runtime.litert import LiteRTRuntime
from firmware_stubs.board import SimulatedBoard, make_simulated_board
from firmware_stubs.hardware_profiles import CORTEX_M4F, PI_ZERO_2W, HardwareProfile
from firmware_stubs.power import BatterySpec, PluggedIn
from firmware_stubs.sensor_streams import FaultSpec, StreamConfig
from firmware_stubs.sensors import make_stream
from telemetry.schemas import FallbackSwitched, MetricsWindow


def make_loop(
    chain_dir: Path,
    flash: Path,
    profile: HardwareProfile = PI_ZERO_2W,
    *,
    thresholds: FallbackThresholds | None = None,
    battery: BatterySpec | None = None,
    charging: PluggedIn | None = None,
    period: float = 1.0,
    window: float = 60.0,
    stream: StreamConfig | None = None,
) -> tuple[InferenceLoop, SimulatedBoard, list, list]:
    board = make_simulated_board(
        profile, task="digits", flash_root=flash, battery=battery, charging=charging, stream_config=stream
    )
    chain = ModelChain.from_dir(chain_dir)
    windows: list[MetricsWindow] = []
    events: list[FallbackSwitched] = []
    loop = InferenceLoop(
        board,
        ModelManager(profile, chain),
        device_id="dev-7",
        sink=windows.append,
        event_sink=events.append,
        policy=FallbackPolicy(len(chain), thresholds or FallbackThresholds(min_battery_pct=None)),
        config=LoopConfig(sample_period_s=period, window_s=window),
    )
    loop.start()
    return loop, board, windows, events


def test_windows_every_w_seconds_count_every_sample_once(chain_dir: Path, flash_root: Path) -> None:
    loop, board, windows, events = make_loop(chain_dir, flash_root, period=2.0, window=60.0)
    results = [loop.step() for _ in range(300)]
    loop.close_window()
    assert [r.sample_index for r in results] == list(range(300))
    assert [w.seq for w in windows] == list(range(len(windows)))
    assert sum(w.inferences for w in windows) == 300
    assert all(w.window_len_s >= 60 for w in windows[:-1])
    assert all(w.model.name == "digits_wide" and w.fallback_level == 0 for w in windows)
    assert events == []
    # Duty-cycled: 300 wakes every 2 s; active time is a tiny part of it.
    t = board.clock.monotonic()
    assert 600.0 <= t < 600.0 + 5.0
    assert windows[0].window_start_s == int(board.clock.now() - t)
    assert sum(w.positives for w in windows) == sum(r.positive for r in results)


def test_histograms_match_the_converters_binning_of_the_same_samples(
    chain_dir: Path, flash_root: Path
) -> None:
    loop, _, windows, _ = make_loop(chain_dir, flash_root)
    loop.run(steps=200)
    loop.close_window()
    art = ModelArtifact.from_dir(chain_dir / "wide", PI_ZERO_2W)
    base = art.report.baselines
    k = windows[0].input_feature
    # The same samples, drawn again from a stream with the same seed, binned by converters' own code.
    stream = make_stream("digits")
    xs = np.stack([stream.read(float(i)).window for i in range(200)])
    feats = feature_summary(xs, base.feature_spec)[:, k]
    assert np.array_equal(
        np.sum([w.input_hist for w in windows], axis=0), bin_counts(feats, base.features[k].edges)
    )
    rt = LiteRTRuntime()
    rt.load(art.model_bytes)
    scores = np.array([max(rt.invoke(x).scores[i] for i in base.output_score_spec.class_ids) for x in xs])
    assert np.array_equal(
        np.sum([w.output_hist for w in windows], axis=0), bin_counts(scores, base.output_score.edges)
    )


def test_energy_of_inference_is_charged_to_the_battery(
    chain_dir: Path, flash_root: Path, tmp_path: Path
) -> None:
    loop, board, windows, _ = make_loop(chain_dir, flash_root, CORTEX_M4F)
    loop.run(steps=300)
    loop.close_window()
    report = board.power_report()
    assert report.active_s > 0
    # Window duty cycles add up to the on-target active time the power model was given.
    assert sum(w.duty_cycle * w.window_len_s for w in windows) == pytest.approx(
        report.active_s, rel=0.05, abs=0.1
    )
    idle = make_simulated_board(CORTEX_M4F, task="digits", flash_root=tmp_path / "idle")
    idle.clock.advance(board.clock.monotonic())
    assert board.battery().percent < idle.battery().percent


def test_mcu_starts_on_the_first_model_that_fits_and_says_why(chain_dir: Path, flash_root: Path) -> None:
    loop, _, windows, events = make_loop(chain_dir, flash_root, CORTEX_M4F)
    assert len(events) == 1
    ev = events[0]
    assert (ev.from_level, ev.to_level, ev.reason) == (0, 1, "memory")
    assert ev.model is not None and ev.model.name == "digits_mlp"
    loop.run(steps=70)
    assert windows[0].model.name == "digits_mlp" and windows[0].fallback_level == 1


def test_low_battery_steps_down_and_charging_brings_it_back(chain_dir: Path, flash_root: Path) -> None:
    t = FallbackThresholds(min_battery_pct=20, battery_margin_pct=5, recover_windows=2)
    loop, _board, windows, events = make_loop(
        chain_dir,
        flash_root,
        thresholds=t,
        battery=BatterySpec(capacity_mah=10_000, initial_percent=19),
        charging=PluggedIn(charge_ma=200_000, from_s=300),
        window=60,
    )
    loop.run(until_s=900)
    reasons = [(e.from_level, e.to_level, e.reason) for e in events]
    assert reasons[:2] == [(0, 1, "battery"), (1, 2, "battery")]
    assert (2, 1, "recovered") in reasons and (1, 0, "recovered") in reasons
    # A window reports the model that ran in it; the switch comes after the window that showed the cause.
    assert windows[0].fallback_level == 0 and windows[0].model.name == "digits_wide"
    assert windows[1].fallback_level == 1 and windows[1].model.name == "digits_mlp"
    assert windows[-1].fallback_level == 0 and windows[-1].model.name == "digits_wide"
    assert any(w.charging for w in windows)


def test_latency_over_budget_walks_down_to_the_cheapest_model(chain_dir: Path, flash_root: Path) -> None:
    t = FallbackThresholds(min_battery_pct=None, max_latency_us=1, latency_windows=2, recover_windows=100)
    loop, _, windows, events = make_loop(chain_dir, flash_root, thresholds=t, window=30)
    loop.run(steps=300)
    assert [(e.from_level, e.to_level, e.reason) for e in events] == [(0, 1, "latency"), (1, 2, "latency")]
    assert windows[-1].model.name == "digits_linear"


def test_sensor_fault_is_counted_not_inferred(chain_dir: Path, flash_root: Path) -> None:
    loop, board, windows, _ = make_loop(chain_dir, flash_root)
    board.stream.inject_fault(FaultSpec(kind="nan", start_s=10, duration_s=20))
    results = loop.run(steps=60)
    loop.close_window()
    assert results.nonfinite_inputs == sum(w.nonfinite_inputs for w in windows) > 0
    assert results.inferences + results.nonfinite_inputs == 60
    assert sum(w.inferences for w in windows) == 60  # a faulty sample is still a sample in the window


def test_false_positive_feedback_lands_in_windows(chain_dir: Path, flash_root: Path) -> None:
    loop, _board, windows, _ = make_loop(chain_dir, flash_root)
    loop.manager.activate(1)
    # A trigger-happy threshold: some digit-0 calls are wrong; users report every false wake.
    loop.rule = loop.rule.model_copy(update={"score_threshold": 0.02})
    results = [loop.step() for _ in range(400)]
    loop.step()  # polls the feedback of the last sample
    loop.close_window()
    stream = make_stream("digits")
    truth = [stream.read(float(i)).is_event for i in range(400)]
    false_calls = sum(r.positive and not truth[r.sample_index] for r in results)
    assert false_calls > 0
    assert sum(w.false_positives for w in windows) == false_calls == loop.stats.false_positive_reports


def test_external_swap_takes_effect_on_the_next_sample(chain_dir: Path, flash_root: Path) -> None:
    loop, _, windows, _ = make_loop(chain_dir, flash_root, window=1000)
    first: list[StepResult] = [loop.step() for _ in range(50)]
    loop.manager.activate(2)  # e.g. an OTA revert from the command thread
    second = [loop.step() for _ in range(50)]
    loop.close_window()
    assert {r.model for r in first} == {"digits_wide@1000000/full_int8"}
    assert {r.model for r in second} == {"digits_linear@1000000/full_int8"}
    assert [r.sample_index for r in first + second] == list(range(100))
    assert windows[-1].model.name == "digits_linear" and windows[-1].fallback_level == 2
    assert loop.policy.level == 2


def test_the_loop_is_fast_on_simulated_time(chain_dir: Path, flash_root: Path) -> None:
    """A simulated hour at one sample per second (3600 inferences) completes: the clock is simulated."""
    loop, board, windows, _ = make_loop(chain_dir, flash_root, CORTEX_M4F)
    loop.run(until_s=3600)
    assert board.clock.monotonic() >= 3600 and len(windows) >= 59


def test_loop_decides_with_the_active_levels_calibrated_threshold(
    chain_dir: Path, flash_root: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    d = tmp_path / "chain"
    shutil.copytree(chain_dir, d)
    chain = json.loads((d / "chain.json").read_text())
    # Level 0 can never fire (int8 scores stop at 255/256); level 1 fires on anything.
    thresholds = {0: 1.0, 1: 0.01}
    for entry in chain["entries"]:
        entry["threshold"] = thresholds.get(entry["rank"])
    (d / "chain.json").write_text(json.dumps(chain))

    loop, _, _, _ = make_loop(d, flash_root)
    first = [loop.step() for _ in range(40)]
    assert loop.rule.score_threshold == 1.0
    assert all(r.score is not None and r.score < 1.0 for r in first)
    assert not any(r.positive for r in first)

    loop.manager.activate(1)  # a fallback or an operator: the next sample runs on level 1
    second = [loop.step() for _ in range(40)]
    assert loop.rule.score_threshold == 0.01
    assert loop.rule.suppression_s is None  # digits: every sample is decided on its own
    inferred = [r for r in second if r.score is not None]
    assert inferred and all(r.positive == (r.score >= 0.01) for r in inferred)
    assert any(r.positive for r in inferred)


def test_swap_to_a_model_with_other_bins_keeps_window_numbering_gapless(
    chain_dir: Path, flash_root: Path, tmp_path: Path
) -> None:
    """A swap to a model whose baseline bins differ closes the open window (one window must not mix two
    binnings); the next window continues the numbering: a reused seq is dropped by the server as a dup."""
    import json
    import shutil

    d = tmp_path / "chain"
    shutil.copytree(chain_dir, d)
    chain = json.loads((d / "chain.json").read_text())
    level2 = next(e for e in chain["entries"] if e["rank"] == 2)
    report_path = d / level2["artifact_dir"] / "report.json"
    report = json.loads(report_path.read_text())
    for feature in report["baselines"]["features"]:
        feature["edges"] = [e * 1.5 for e in feature["edges"]]  # other bins, same order
    report_path.write_text(json.dumps(report))

    loop, _, windows, _ = make_loop(d, flash_root, window=1000)
    for _ in range(30):
        loop.step()
    loop.manager.activate(2)
    for _ in range(30):
        loop.step()
    loop.close_window()
    assert len(windows) == 2, "the swap closed the first window"
    assert [w.seq for w in windows] == [0, 1]
    assert windows[0].model.name != windows[1].model.name == "digits_linear"
