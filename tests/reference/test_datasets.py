from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from converters.features import FeatureSpec, dequantize_features
from converters.reference import kws_data
from converters.reference.datasets import DATA_DIR, DatasetError, load_kws_stream, load_kws_task
from converters.reference.digits import load_digits_task
from converters.reference.stream_eval import feature_histogram


def _all_splits(task) -> list[tuple[np.ndarray, np.ndarray]]:  # type: ignore[no-untyped-def]
    return [(task.x_train, task.y_train), (task.x_cal, task.y_cal), (task.x_eval, task.y_eval)]


def test_kws_dataset_shapes_dtypes_and_range() -> None:
    task = load_kws_task()
    spec = FeatureSpec()
    assert task.feature_spec == spec
    assert task.class_names == list(kws_data.CLASS_NAMES)
    for x, y in _all_splits(task):
        assert x.dtype == np.float32 and x.shape[1:] == (*spec.input_shape, 1)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert y.shape == (x.shape[0],) and set(np.unique(y)) == set(range(len(task.class_names)))
    sizes = [len(y) for _, y in _all_splits(task)]
    assert sizes[0] > 5 * sizes[1] and sizes[2] > sizes[1] > 100


def test_kws_classes_are_balanced_and_splits_partition_the_data() -> None:
    with np.load(DATA_DIR / kws_data.DATASET_FILE) as npz:
        labels = npz["labels"]
        splits = [npz[f"split_{k}"] for k in ("train", "calibration", "eval")]
    counts = np.bincount(labels, minlength=len(kws_data.CLASS_NAMES))
    assert counts.max() - counts.min() <= 1
    joined = np.concatenate(splits)
    assert np.array_equal(np.sort(joined), np.arange(labels.size))  # disjoint and complete
    for idx in splits:  # every split keeps every class near its share
        share = np.bincount(labels[idx], minlength=len(counts)) / idx.size
        assert np.all(np.abs(share - 1 / len(counts)) < 0.06)


def test_silence_examples_are_quieter_than_speech() -> None:
    task = load_kws_task()
    x, y = task.x_train, task.y_train
    assert x[y == 0].max(axis=(1, 2, 3)).mean() < x[y >= 2].max(axis=(1, 2, 3)).mean() - 0.1


def test_digits_split_is_deterministic_stratified_and_scaled() -> None:
    a, b = load_digits_task(), load_digits_task()
    for (xa, ya), (xb, yb) in zip(_all_splits(a), _all_splits(b), strict=True):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
        assert xa.shape[1:] == (8, 8, 1) and xa.dtype == np.float32
        assert xa.min() >= 0.0 and xa.max() <= 1.0
        assert set(np.unique(ya)) == set(range(10))
    assert sum(len(y) for _, y in _all_splits(a)) == 1797
    assert load_digits_task(seed=1).y_train.tolist() != a.y_train.tolist() or not np.array_equal(
        load_digits_task(seed=1).x_train, a.x_train
    )


def test_stream_has_sparse_keywords_with_ground_truth() -> None:
    stream = load_kws_stream("nominal")
    assert stream.frames.shape[1] == stream.spec.n_mels
    assert stream.duration_s > 120
    assert np.all(np.diff(stream.onsets_s) > 0) and np.all(stream.offsets_s > stream.onsets_s)
    assert stream.offsets_s.max() <= stream.duration_s
    keywords = np.isin(stream.class_ids, kws_data.POSITIVE_CLASS_IDS)
    assert 10 <= keywords.sum() < 0.5 * stream.class_ids.size  # sparse among other words


def test_louder_noise_floor_shifts_the_input_histogram() -> None:
    nominal, loud = load_kws_stream("nominal"), load_kws_stream("loud")
    assert loud.noise_dbfs - nominal.noise_dbfs >= 10
    assert np.array_equal(nominal.onsets_s, loud.onsets_s)  # same words, only the floor moved
    p, q = feature_histogram(nominal.frames) + 1e-4, feature_histogram(loud.frames) + 1e-4
    psi = float(np.sum((q - p) * np.log(q / p)))
    assert psi > 0.25  # "significant shift" rule of thumb is PSI > 0.25
    assert np.median(loud.frames) > np.median(nominal.frames) + 0.1


def test_missing_data_file_is_named(tmp_path: Path) -> None:
    shutil.copy(DATA_DIR / kws_data.META_FILE, tmp_path)
    with pytest.raises(DatasetError, match=r"kws_dataset\.npz: missing"):
        load_kws_task(tmp_path)


def test_corrupt_data_file_is_refused(tmp_path: Path) -> None:
    shutil.copy(DATA_DIR / kws_data.META_FILE, tmp_path)
    (tmp_path / kws_data.DATASET_FILE).write_bytes(b"not a zip file")
    with pytest.raises(DatasetError, match="not a readable"):
        load_kws_task(tmp_path)


def test_wrong_feature_shape_is_refused(tmp_path: Path) -> None:
    shutil.copy(DATA_DIR / kws_data.META_FILE, tmp_path)
    idx = np.arange(4)
    np.savez(
        tmp_path / kws_data.DATASET_FILE,
        features=np.zeros((4, 10, 10), np.uint8),
        labels=np.zeros(4, np.uint8),
        split_train=idx,
        split_calibration=idx,
        split_eval=idx,
    )
    with pytest.raises(DatasetError, match="shape"):
        load_kws_task(tmp_path)


def test_missing_metadata_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"kws_meta\.json"):
        load_kws_stream("nominal", tmp_path)


def test_generator_cli_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        kws_data.main(["--out", str(tmp_path / "x"), "--examples", "3"])
    assert exc.value.code == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not kws_data.espeak_available(), reason="espeak-ng not installed")
def test_regenerated_slice_matches_committed_features() -> None:
    spec = FeatureSpec()
    indices = list(range(0, 3000, 150))  # 20 examples, every class
    feats, labels = kws_data.generate_examples(indices, 0, spec)
    with np.load(DATA_DIR / kws_data.DATASET_FILE) as npz:
        committed = dequantize_features(npz["features"][indices])
        committed_labels = npz["labels"][indices]
    assert feats.shape == committed.shape
    assert np.array_equal(labels, committed_labels)
    # Same espeak-ng build: equal up to the uint8 storage step; another build: same statistics.
    assert abs(float(feats.mean()) - float(committed.mean())) < 0.01
    assert abs(float(feats.std()) - float(committed.std())) < 0.01
    assert np.mean(np.abs(feats - committed) <= 0.5 / 255 + 1e-6) > 0.95


@pytest.mark.skipif(not kws_data.espeak_available(), reason="espeak-ng not installed")
def test_stream_generator_noise_floor_is_the_drift_knob() -> None:
    spec = FeatureSpec()
    quiet, ev_q = kws_data.make_stream(1, spec, duration_s=12.0, noise_dbfs=-60.0)
    loud, ev_l = kws_data.make_stream(1, spec, duration_s=12.0, noise_dbfs=-30.0)
    assert ev_q == ev_l and len(ev_q) >= 1
    assert np.median(loud) > np.median(quiet) + 0.2
