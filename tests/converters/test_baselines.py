"""converters.baselines: the summary the device reproduces, checked against hand-written reductions."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from converters.baselines import (
    bin_counts,
    feature_summary,
    make_feature_spec,
    make_output_score_spec,
    output_score,
    quantile_edges,
)


def test_image_features_are_column_means() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((5, 8, 8, 1)).astype(np.float32)
    spec = make_feature_spec((8, 8, 1))
    features = feature_summary(x, spec)
    assert features.shape == (5, 8)
    for n in range(5):
        for col in range(8):
            assert features[n, col] == pytest.approx(float(np.mean(x[n, :, col, 0])))


def test_spectrogram_bins_grouped_into_at_most_16_features() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 49, 40)).astype(np.float32)
    spec = make_feature_spec((49, 40), max_features=16)
    features = feature_summary(x, spec)
    assert features.shape == (3, 16)
    bounds = spec.group_bounds
    assert bounds[0] == 0 and bounds[-1] == 40 and all(b > a for a, b in itertools.pairwise(bounds))
    for n in range(3):
        for i in range(16):
            assert features[n, i] == pytest.approx(float(x[n, :, bounds[i] : bounds[i + 1]].mean()))


def test_rgb_features_are_channel_means_and_single_sample_works() -> None:
    rng = np.random.default_rng(3)
    sample = rng.random((4, 6, 3)).astype(np.float32)
    spec = make_feature_spec((4, 6, 3))
    one = feature_summary(sample, spec)
    assert one.shape == (3,)
    np.testing.assert_allclose(one, sample.reshape(-1, 3).mean(axis=0), rtol=1e-6)


def test_vector_input_keeps_small_vectors_elementwise() -> None:
    x = np.arange(20, dtype=np.float32).reshape(2, 10)
    spec = make_feature_spec((10,))
    np.testing.assert_array_equal(feature_summary(x, spec), x)


def test_wrong_sample_shape_is_rejected() -> None:
    spec = make_feature_spec((8, 8, 1))
    with pytest.raises(ValueError, match="shape"):
        feature_summary(np.zeros((2, 8, 7, 1)), spec)


def test_bins_are_open_ended_and_count_everything() -> None:
    edges = [0.0, 1.0, 2.0, 3.0]
    counts = bin_counts(np.array([-5.0, 0.0, 0.5, 1.0, 2.5, 3.0, 99.0]), edges)
    # -5 and 0 and 0.5 -> bin 0; 1.0 -> bin 1; 2.5, 3.0 and 99 -> last bin
    assert counts.tolist() == [3, 1, 3]


def test_quantile_edges_split_data_evenly_and_survive_constants() -> None:
    values = np.arange(1000, dtype=np.float64)
    edges = quantile_edges(values, 10)
    assert len(edges) == 11
    assert bin_counts(values, edges).tolist() == [100] * 10
    constant = quantile_edges(np.full(50, 3.0), 10)
    assert len(constant) == 2 and constant[0] < 3.0 < constant[1]


def test_output_score_uses_positive_classes_when_given() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert output_score(p, make_output_score_spec(3, None)).tolist() == [0.7, 0.6]
    assert output_score(p, make_output_score_spec(3, [1])).tolist() == [0.2, 0.3]


def test_device_side_modules_do_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "import converters.baselines, converters.tflite_inspect, converters.tflm_probe, converters.report\n"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_logit_outputs_get_a_softmax_first() -> None:
    from converters.baselines import looks_like_probabilities

    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert not looks_like_probabilities(logits)
    assert looks_like_probabilities(np.array([[0.7, 0.2, 0.1]]))
    spec = make_output_score_spec(3, None, apply_softmax=True)
    expected0 = np.exp(2.0) / (np.exp(2.0) + 1.0 + np.exp(-1.0))
    np.testing.assert_allclose(output_score(logits, spec), [expected0, 1 / 3])
