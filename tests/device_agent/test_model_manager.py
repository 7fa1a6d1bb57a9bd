"""Model manager: chain, variant choice, start-up fallback, and hot swap counted sample by sample."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from device_agent.model_manager import (
    ModelArtifact,
    ModelChain,
    ModelManager,
    numeric_version,
)
from device_agent.runtime.base import ModelDoesNotFit, ModelLoadError
from device_agent.runtime.litert import LiteRTRuntime
from firmware_stubs.hardware_profiles import CORTEX_M4F, ESP32_S3, PI_ZERO_2W


def test_chain_is_read_in_rank_order(chain_dir: Path) -> None:
    chain = ModelChain.from_dir(chain_dir)
    assert [lv.name for lv in chain.levels] == ["wide", "mlp", "linear"]
    assert chain.rule.positive_class_ids == [0] and chain.rule.score_threshold == 0.5


def test_default_variant_comes_from_hardware_fit(chain_dir: Path) -> None:
    report = json.loads((chain_dir / "mlp" / "report.json").read_text())
    for profile in (PI_ZERO_2W, CORTEX_M4F):
        art = ModelArtifact.from_dir(chain_dir / "mlp", profile)
        assert art.variant == report["hardware_fit"][profile.name]["default_variant"]
        assert art.model_bytes == (chain_dir / "mlp" / f"{art.variant}.tflite").read_bytes()
    assert ModelArtifact.from_dir(chain_dir / "mlp", PI_ZERO_2W, variant="float32").variant == "float32"


def test_no_fitting_variant_is_model_does_not_fit(chain_dir: Path) -> None:
    with pytest.raises(ModelDoesNotFit, match="no variant fits cortex-m4f"):
        ModelArtifact.from_dir(chain_dir / "wide", CORTEX_M4F)


def test_mcu_start_skips_the_model_that_does_not_fit(chain_dir: Path) -> None:
    m = ModelManager(CORTEX_M4F, ModelChain.from_dir(chain_dir))
    model, failures = m.start()
    assert model.level == 1 and model.artifact.name == "digits_mlp"
    assert [(lv, type(e)) for lv, e in failures] == [(0, ModelDoesNotFit)]
    m2 = ModelManager(ESP32_S3, ModelChain.from_dir(chain_dir))
    assert m2.start()[0].level == 0


def _copy_chain(chain_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "chain"
    shutil.copytree(chain_dir, dst)
    return dst


def test_tampered_model_file_is_refused_by_hash(chain_dir: Path, tmp_path: Path) -> None:
    d = _copy_chain(chain_dir, tmp_path)
    f = d / "mlp" / "full_int8.tflite"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        ModelArtifact.from_dir(d / "mlp", PI_ZERO_2W)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: (d / "chain.json").unlink(), "cannot read chain"),
        (lambda d: (d / "chain.json").write_text("{not json"), "not a valid chain.json"),
        (
            lambda d: (d / "chain.json").write_text(
                json.dumps({**json.loads((d / "chain.json").read_text()), "entries": []})
            ),
            "no entries",
        ),
    ],
)
def test_bad_chain_files(chain_dir: Path, tmp_path: Path, mutate, match: str) -> None:
    d = _copy_chain(chain_dir, tmp_path)
    before = {p: p.read_bytes() for p in (d / "mlp").iterdir() if p.is_file()}
    mutate(d)
    with pytest.raises(ModelLoadError, match=match):
        ModelChain.from_dir(d)
    assert {p: p.read_bytes() for p in (d / "mlp").iterdir() if p.is_file()} == before  # nothing touched


def test_bad_report_is_a_load_error(chain_dir: Path, tmp_path: Path) -> None:
    d = _copy_chain(chain_dir, tmp_path)
    (d / "mlp" / "report.json").write_text('{"name": 3}')
    with pytest.raises(ModelLoadError, match="not a valid conversion report"):
        ModelArtifact.from_dir(d / "mlp", PI_ZERO_2W)


def test_numeric_version() -> None:
    assert numeric_version("7") == 7
    assert numeric_version("1.2.3") == 1_002_003
    assert numeric_version(5) == 5
    with pytest.raises(ModelLoadError):
        numeric_version("1.2.3-rc1")


# ---------------------------------------------------------------------------- hot swap


def _bare_outputs(chain_dir: Path, name: str, xs: np.ndarray) -> np.ndarray:
    """Reference scores from an interpreter the manager knows nothing about."""
    rt = LiteRTRuntime()
    rt.load(chain_dir / name / "full_int8.tflite")
    return np.stack([rt.invoke(x).scores for x in xs])


def test_hot_swap_scheduled_every_sample_runs_once_on_the_model_active_when_taken(
    chain_dir: Path, digits_eval: tuple[np.ndarray, np.ndarray]
) -> None:
    xs = digits_eval[0][:120]
    names = ["wide", "mlp", "linear"]
    expected = {n: _bare_outputs(chain_dir, n, xs) for n in names}
    m = ModelManager(PI_ZERO_2W, ModelChain.from_dir(chain_dir))
    m.activate(0)
    swap_before = {15: 1, 40: 2, 41: 0, 77: 1, 100: 2}  # sample index -> level swapped in just before it
    served: dict[int, str] = {}
    for i, x in enumerate(xs):
        if i in swap_before:
            m.activate(swap_before[i])
        inf = m.infer(x)
        assert i not in served
        served[i] = names[inf.model.level]
        assert np.array_equal(inf.scores, expected[served[i]][i]), f"sample {i} not run on {served[i]}"
    active = 0
    for i in range(len(xs)):
        active = swap_before.get(i, active)
        assert served[i] == names[active]
    assert m.generation == 1 + len(swap_before)


def test_hot_swap_from_another_thread_loses_and_repeats_nothing(
    chain_dir: Path, digits_eval: tuple[np.ndarray, np.ndarray]
) -> None:
    xs = digits_eval[0][:300]
    names = ["wide", "mlp", "linear"]
    expected = {n: _bare_outputs(chain_dir, n, xs) for n in names}
    m = ModelManager(PI_ZERO_2W, ModelChain.from_dir(chain_dir))
    m.activate(0)
    swaps = 12
    progress = threading.Semaphore(0)
    done = threading.Event()

    def swapper() -> None:
        for k in range(swaps):
            for _ in range(10):  # let some samples through between swaps
                progress.acquire()
            m.activate((k + 1) % 3)
        done.set()

    t = threading.Thread(target=swapper)
    t.start()
    counts = np.zeros(len(xs), int)
    generations = []
    for i, x in enumerate(xs):
        inf = m.infer(x)
        counts[i] += 1
        generations.append(inf.generation)
        assert np.array_equal(inf.scores, expected[names[inf.model.level]][i])
        progress.release()
    t.join(timeout=60)
    assert done.is_set()
    assert (counts == 1).all()
    assert generations == sorted(generations)  # never served by a model older than the one before
    assert len(set(generations)) > 1 and m.generation == 1 + swaps


def test_failed_load_leaves_the_active_model(
    chain_dir: Path, tmp_path: Path, digits_eval: tuple[np.ndarray, np.ndarray]
) -> None:
    d = _copy_chain(chain_dir, tmp_path)
    (d / "linear" / "full_int8.tflite").write_bytes(b"garbage")
    m = ModelManager(PI_ZERO_2W, ModelChain.from_dir(d))
    before = m.activate(1)
    gen = m.generation
    with pytest.raises(ModelLoadError):
        m.activate(2)
    with pytest.raises(ModelLoadError, match="does not exist"):
        m.activate(7)
    assert m.active is before and m.generation == gen
    assert m.infer(digits_eval[0][0]).model is before


# ---------------------------------------------------------------------------- per-model thresholds


def _set_entry_thresholds(d: Path, thresholds: dict[int, float]) -> None:
    chain = json.loads((d / "chain.json").read_text())
    for entry in chain["entries"]:
        if entry["rank"] in thresholds:
            entry["threshold"] = thresholds[entry["rank"]]
    (d / "chain.json").write_text(json.dumps(chain))


def test_per_entry_threshold_wins_over_the_task_threshold(chain_dir: Path, tmp_path: Path) -> None:
    d = _copy_chain(chain_dir, tmp_path)
    _set_entry_thresholds(d, {1: 0.97})
    chain = ModelChain.from_dir(d)
    task_threshold = chain.rule.score_threshold
    assert task_threshold != 0.97
    assert chain.rule_for(1).score_threshold == 0.97
    assert chain.rule_for(0).score_threshold == task_threshold  # no entry threshold: the task's
    assert chain.rule_for(None).score_threshold == task_threshold  # a model outside the chain
    assert chain.rule_for(1).positive_class_ids == chain.rule.positive_class_ids


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.2])
def test_out_of_range_entry_threshold_is_refused(chain_dir: Path, tmp_path: Path, bad: float) -> None:
    d = _copy_chain(chain_dir, tmp_path)
    _set_entry_thresholds(d, {0: bad})
    with pytest.raises(ModelLoadError, match="threshold"):
        ModelChain.from_dir(d)


def test_an_installed_release_takes_level_0_and_runs_on_the_task_rule(chain_dir: Path) -> None:
    """After an OTA install, fallback steps down to the chain's cheaper levels and back up to the release,
    not to the factory primary; the release has no chain-calibrated threshold, so the task's rule applies."""
    from device_agent.fallback import FallbackPolicy, SwitchReason

    chain = ModelChain.from_dir(chain_dir)
    m = ModelManager(CORTEX_M4F, chain)
    m.start()  # level 0 ("wide") does not fit the MCU: it runs level 1
    release = ModelArtifact.from_dir(chain_dir / "linear", CORTEX_M4F)  # stands in for a release
    m.set_primary(release)
    assert m.load_level(0).artifact.name == "digits_linear"
    assert m.load_level(1).artifact.name == "digits_mlp"  # the chain's own cheaper levels stay
    assert m.rule_for(0) == chain.rule and m.rule_for(1) == chain.rule_for(1)
    policy = FallbackPolicy(len(chain))
    policy.mark_unusable(0, SwitchReason.LOAD_FAILED, "too big")
    policy.replace_level(0)  # the release at level 0 fits: what was known about "wide" is forgotten
    assert policy.usable(0) and policy.level == 0 and policy.ceiling == 0
    m.set_primary(None)
    with pytest.raises(ModelDoesNotFit):
        m.artifact_for(0)  # the chain's primary again
