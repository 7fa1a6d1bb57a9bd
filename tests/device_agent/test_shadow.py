"""Shadow mode in the loop: the candidate runs on an exact share of inputs and never decides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from device_agent.model_manager import ModelArtifact
from device_agent.runtime.litert import LiteRTRuntime
from device_agent.shadow import ShadowRunner
from firmware_stubs.hardware_profiles import PI_ZERO_2W
from firmware_stubs.sensors import make_stream

from .test_inference_loop import make_loop


def _bare_positive(chain_dir: Path, name: str, n: int, threshold: float) -> list[bool]:
    rt = LiteRTRuntime()
    rt.load(ModelArtifact.from_dir(chain_dir / name, PI_ZERO_2W).model_bytes)
    stream = make_stream("digits")
    return [bool(rt.invoke(stream.read(float(i)).window).scores[0] >= threshold) for i in range(n)]


def test_candidate_runs_on_the_sampled_share_and_only_the_active_model_decides(
    chain_dir: Path, tmp_path: Path
) -> None:
    n, threshold = 400, 0.02
    plain, _, _, _ = make_loop(chain_dir, tmp_path / "a")
    plain.manager.activate(1)
    plain.rule = plain.rule.model_copy(update={"score_threshold": threshold})
    baseline = [plain.step().positive for _ in range(n)]

    loop, _board, windows, _ = make_loop(chain_dir, tmp_path / "b", window=100)
    loop.manager.activate(1)
    loop.rule = loop.rule.model_copy(update={"score_threshold": threshold})
    shadow = loop.enable_shadow(loop.manager.load_level(2), sample_fraction=0.25, candidate_version=9)
    results = [loop.step() for _ in range(n)]
    loop.step()  # deliver the last feedback
    loop.close_window()

    assert [r.positive for r in results] == baseline  # the candidate never changed a decision
    sampled = [r for r in results if r.shadow is not None]
    assert len(sampled) == shadow.totals.samples == n // 4
    cand_truth = _bare_positive(chain_dir, "linear", n, threshold)
    for r in sampled:
        assert r.shadow is not None
        assert r.shadow.candidate_positive == cand_truth[r.sample_index]
        assert r.shadow.agreed == (r.shadow.candidate_positive == r.positive)
    figures = [w.shadow for w in windows if w.shadow is not None]
    assert len(figures) == len(windows) and all(f.candidate_version == 9 for f in figures)
    assert sum(f.samples for f in figures) == len(sampled)
    assert sum(f.agreements for f in figures) == sum(r.shadow.agreed for r in sampled if r.shadow)
    assert sum(f.candidate_positives for f in figures) == sum(cand_truth[r.sample_index] for r in sampled)
    # Candidate false positives: acted-on samples the candidate also called, that feedback marked false.
    stream = make_stream("digits")
    truth = [stream.read(float(i)).is_event for i in range(n)]
    expected_fp = sum(
        1
        for r in sampled
        if r.positive and r.shadow and r.shadow.candidate_positive and not truth[r.sample_index]
    )
    assert expected_fp > 0
    assert (
        sum(f.candidate_false_positives for f in figures)
        == expected_fp
        == shadow.totals.candidate_false_positives
    )
    assert shadow.totals.energy_mah > 0


def test_shadow_costs_energy_bounded_by_the_share(chain_dir: Path, tmp_path: Path) -> None:
    def drained(fraction: float | None) -> float:
        loop, board, _, _ = make_loop(chain_dir, tmp_path / f"f{fraction}", period=1.0)
        loop.manager.activate(2)
        if fraction:
            loop.enable_shadow(loop.manager.load_level(0), sample_fraction=fraction, candidate_version=2)
        loop.run(steps=300)
        return board.power_report().active_s

    none, half = drained(None), drained(0.5)
    assert half > none  # the wide candidate costs real (simulated) energy


def test_energy_budget_caps_the_share_for_an_expensive_candidate(chain_dir: Path, tmp_path: Path) -> None:
    loop, _, _, _ = make_loop(chain_dir, tmp_path / "c")
    loop.manager.activate(2)  # cheap linear model active, expensive wide candidate
    loop.run(steps=20)  # warm the active interpreter: its first invokes are slow and would skew the means
    shadow = loop.enable_shadow(
        loop.manager.load_level(0), sample_fraction=1.0, candidate_version=3, energy_budget_fraction=0.1
    )
    loop.run(steps=400)
    assert shadow.effective_fraction < 1.0
    assert shadow.totals.samples < 400 and shadow.totals.skipped_for_budget > 0
    # Uncapped, the wide candidate would cost tens of times the active model's time; capped, about 10 %
    # (3x slack for timing noise on a loaded machine, plus one candidate run the counter may round up).
    t = shadow.totals
    assert t.candidate_invoke_ns <= 0.3 * shadow._active_ns + 2 * t.candidate_invoke_ns / t.samples


def test_disable_shadow_stops_it(chain_dir: Path, tmp_path: Path) -> None:
    loop, _, windows, _ = make_loop(chain_dir, tmp_path / "d", window=10)
    loop.enable_shadow(loop.manager.load_level(1), sample_fraction=1.0, candidate_version=1)
    loop.run(steps=20)
    assert loop.disable_shadow() is not None
    loop.run(steps=20)
    assert all(r.shadow is None for r in [loop.step() for _ in range(5)])
    assert windows[0].shadow is not None and windows[-1].shadow is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample_fraction": 0.0}, "sample_fraction"),
        ({"sample_fraction": 1.5}, "sample_fraction"),
        ({"sample_fraction": 0.5, "energy_budget_fraction": 0}, "energy"),
    ],
)
def test_bad_shadow_settings(chain_dir: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    loop, _, _, _ = make_loop(chain_dir, tmp_path / "e")
    with pytest.raises(ValueError, match=match):
        ShadowRunner(loop.manager.load_level(1), loop.rule, candidate_version=1, **kwargs)


def test_exact_share_over_any_length(chain_dir: Path, tmp_path: Path) -> None:
    """The credit counter: over n samples the candidate runs floor(n f) or floor(n f) + 1 times."""
    loop, _, _, _ = make_loop(chain_dir, tmp_path / "f")
    candidate = loop.manager.load_level(2)
    x = np.zeros((8, 8, 1), np.float32)
    for f in (0.1, 0.25, 1 / 3, 0.7):
        runner = ShadowRunner(candidate, loop.rule, sample_fraction=f, candidate_version=1)
        picks = np.cumsum([runner.run(i, x, False) is not None for i in range(400)])
        for n in (1, 7, 100, 399):
            assert int(n * f) <= picks[n - 1] <= int(n * f) + 1
