"""The trained, converted chains (built once per session in conftest)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from converters.features import FeatureSpec
from converters.reference.chain import ChainError, ChainReport, build_reference_chain
from converters.reference.datasets import load_kws_stream
from converters.reference.kws_data import CALIBRATION_STREAM_LABEL
from converters.reference.stream_eval import evaluate_stream
from converters.report import ConversionReport
from firmware_stubs.hardware_profiles import CORTEX_M4F

pytestmark = pytest.mark.slow


def _chains(kws_chain, digits_cli_run) -> list[tuple[ChainReport, Path]]:  # type: ignore[no-untyped-def]
    kws_dir, digits_out = kws_chain[0], digits_cli_run[0] / "digits"
    return [(ChainReport.read(kws_dir), kws_dir), (ChainReport.read(digits_out), digits_out)]


def test_chains_have_three_models_ordered_by_measured_cost(kws_chain, digits_cli_run) -> None:  # type: ignore[no-untyped-def]
    for chain, directory in _chains(kws_chain, digits_cli_run):
        assert len(chain.entries) >= 3
        assert [e.rank for e in chain.entries] == list(range(len(chain.entries)))
        costs = []
        for entry in chain.entries:  # recompute the cost from each model's own report.json
            report = ConversionReport.read(directory / entry.artifact_dir)
            int8 = report.variants["full_int8"]
            assert report.tflm.arena_bytes is not None
            costs.append(int8.latency_steady_us * report.tflm.arena_bytes)
            assert math.isclose(entry.cost, costs[-1])
        assert costs == sorted(costs, reverse=True)


def test_each_int8_model_is_within_one_point_or_rejected(kws_chain, digits_cli_run) -> None:  # type: ignore[no-untyped-def]
    for chain, directory in _chains(kws_chain, digits_cli_run):
        for entry in chain.entries:
            report = ConversionReport.read(directory / entry.artifact_dir)
            for variant in report.variants.values():
                if variant.accuracy_delta_pp < -report.config.max_accuracy_drop_pp:
                    assert variant.status == "rejected" and variant.rejection_reason
            int8 = report.variants["full_int8"]
            assert (entry.full_int8_delta_pp, entry.full_int8_status) == (int8.accuracy_delta_pp, int8.status)


def test_primary_models_learn_their_task(kws_chain, digits_cli_run) -> None:  # type: ignore[no-untyped-def]
    kws, digits = (c for c, _ in _chains(kws_chain, digits_cli_run))
    chance_kws, chance_digits = 1 / len(kws.metadata.class_names), 1 / 10
    assert kws.entries[0].float_accuracy > 0.85 > 4 * chance_kws
    assert digits.entries[0].float_accuracy > 0.9 > 5 * chance_digits
    for chain in (kws, digits):
        assert all(e.float_accuracy > 2 * (1 / len(chain.metadata.class_names)) for e in chain.entries)


def test_primary_kws_model_fits_the_cortex_m4f_budget(kws_chain) -> None:  # type: ignore[no-untyped-def]
    chain = ChainReport.read(kws_chain[0])
    primary = chain.entries[0]
    report = ConversionReport.read(kws_chain[0] / primary.artifact_dir)
    assert report.tflm.arena_bytes is not None
    # The measured TFLM arena plus the I/O buffers and the int8 file must fit the MCU class budget,
    # so the MCU classes keep a default variant for the realistically sized primary model.
    assert report.tflm.arena_bytes + report.tflm.io_bytes <= CORTEX_M4F.model_ram_budget_bytes
    assert primary.full_int8_bytes <= CORTEX_M4F.model_flash_budget_bytes
    assert primary.full_int8_status == "accepted"
    assert primary.default_variants[CORTEX_M4F.name] == "full_int8"


def test_digits_primary_meets_the_int8_bytes_target(digits_cli_run) -> None:  # type: ignore[no-untyped-def]
    # Target of issue 2: full-int8 file <= 0.30 x float32. The digits CNN keeps most weights in a dense
    # layer (hundreds of weights per output channel), so per-channel quantization parameters stay small.
    primary = ChainReport.read(digits_cli_run[0] / "digits").entries[0]
    assert primary.full_int8_bytes <= 0.30 * primary.float32_bytes


def test_kws_chain_records_device_metadata(kws_chain) -> None:  # type: ignore[no-untyped-def]
    meta = ChainReport.read(kws_chain[0]).metadata
    assert meta.feature_spec == FeatureSpec()
    assert meta.input_shape == [*FeatureSpec().input_shape, 1]
    assert [meta.class_names[i] for i in meta.positive_class_ids] == ["yes", "no", "up", "down"]
    assert 0 < meta.score_threshold < 1 and meta.suppression_s and meta.window_stride_s


def test_kws_stream_metrics_are_computed_and_reproducible(kws_chain) -> None:  # type: ignore[no-untyped-def]
    directory = kws_chain[0]
    chain = ChainReport.read(directory)
    nominal = load_kws_stream("nominal")
    n_keywords = int(sum(c in chain.metadata.positive_class_ids for c in nominal.class_ids))
    for entry in chain.entries:
        assert set(entry.streams) == {"nominal", "loud"}
        for m in entry.streams.values():
            assert math.isfinite(m.false_activations_per_hour) and m.false_activations_per_hour >= 0
            assert 0.0 <= m.false_rejection_rate <= 1.0
            assert m.keyword_events == n_keywords
            assert m.true_activations + m.false_rejections == n_keywords
    primary = chain.entries[0]
    again = evaluate_stream(
        directory / primary.artifact_dir / "full_int8.tflite",
        nominal,
        chain.metadata.positive_class_ids,
        threshold=chain.threshold_for(primary),
        suppression_s=chain.metadata.suppression_s or 1.0,
    )
    assert again == primary.streams["nominal"]
    assert primary.streams["nominal"].false_rejection_rate < 0.5  # the primary model hears most keywords


def test_each_kws_model_has_its_calibrated_threshold(kws_chain) -> None:  # type: ignore[no-untyped-def]
    directory = kws_chain[0]
    chain = ChainReport.read(directory)
    calibration_stream = load_kws_stream(CALIBRATION_STREAM_LABEL)
    nominal = load_kws_stream("nominal")
    # A separate, longer recording: other word schedule, so the reported streams stay held out.
    assert calibration_stream.duration_s > nominal.duration_s
    assert not np.array_equal(calibration_stream.onsets_s[:5], nominal.onsets_s[:5])
    for entry in chain.entries:
        cal = entry.calibration
        assert cal is not None and entry.threshold == cal.threshold == chain.threshold_for(entry)
        assert cal.stream == CALIBRATION_STREAM_LABEL and len(cal.curve) >= 10
        # The real model on the calibration stream at the chosen threshold: target met, or flagged
        # because no threshold of the curve met it.
        m = evaluate_stream(
            directory / entry.artifact_dir / "full_int8.tflite",
            calibration_stream,
            chain.metadata.positive_class_ids,
            threshold=entry.threshold,
            suppression_s=chain.metadata.suppression_s or 1.0,
        )
        assert math.isclose(m.false_activations_per_hour, cal.false_activations_per_hour, abs_tol=1e-3)
        target = cal.target_false_activations_per_hour
        if cal.meets_target:
            assert m.false_activations_per_hour <= target and cal.flag is None
            within = [p.false_rejection_rate for p in cal.curve if p.false_activations_per_hour <= target]
            assert math.isclose(m.false_rejection_rate, min(within), abs_tol=1e-4)
        else:
            assert cal.flag and all(p.false_activations_per_hour > target for p in cal.curve)
            assert m.false_activations == min(p.false_activations for p in cal.curve)
        # The reported held-out metrics are measured at the entry's threshold, not the task-wide one.
        assert {s.threshold for s in entry.streams.values()} == {entry.threshold}


def test_schema_1_0_chain_without_entry_thresholds_still_loads(kws_chain, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    raw = json.loads((kws_chain[0] / "chain.json").read_text())
    raw["schema_version"] = "1.0"
    for entry in raw["entries"]:
        del entry["threshold"], entry["calibration"]
    (tmp_path / "chain.json").write_text(json.dumps(raw))
    old = ChainReport.read(tmp_path)
    assert all(e.threshold is None and e.calibration is None for e in old.entries)
    assert {old.threshold_for(e) for e in old.entries} == {old.metadata.score_threshold}
    raw["entries"][0]["threshold"] = 1.5  # a corrupt per-entry threshold is refused, not used
    (tmp_path / "chain.json").write_text(json.dumps(raw))
    with pytest.raises(ChainError, match=r"(?s)not a valid chain report.*threshold"):
        ChainReport.read(tmp_path)


def test_progress_is_reported_in_order(kws_chain) -> None:  # type: ignore[no-untyped-def]
    fractions = [f for _, f in kws_chain[1]]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert any("ds_cnn" in d for d, _ in kws_chain[1])


def test_unknown_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="unknown reference task 'speech'"):
        build_reference_chain("speech", tmp_path / "x")  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_existing_chain_is_not_overwritten_without_consent(tmp_path: Path) -> None:
    target = tmp_path / "chain"
    target.mkdir()
    (target / "chain.json").write_text("precious")
    with pytest.raises(ChainError, match="already exists"):
        build_reference_chain("digits", target)
    assert (target / "chain.json").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain"]  # no temporary directory left


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"target_fa_per_hour": -1.0}, "finite number >= 0"), ({"thresholds": ()}, "no thresholds")],
)
def test_bad_calibration_settings_are_refused_before_any_work(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ChainError, match=rf"threshold calibration: .*{message}"):
        build_reference_chain("kws", tmp_path / "x", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_out_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ChainError, match="not a directory"):
        build_reference_chain("digits", target, overwrite=True)
    assert target.read_text() == "x"


def test_reading_a_corrupt_or_missing_chain_report_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ChainError, match="cannot read"):
        ChainReport.read(tmp_path)
    (tmp_path / "chain.json").write_text('{"task": "kws"}')
    with pytest.raises(ChainError, match="not a valid chain report"):
        ChainReport.read(tmp_path)
