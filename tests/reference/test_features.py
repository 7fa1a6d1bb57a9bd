from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from converters.features import FeatureSpec, dequantize_features, log_mel, quantize_features

SPEC = FeatureSpec()


def _noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(round(seconds * SPEC.sample_rate))
    return x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)


def test_one_window_has_the_model_input_shape_and_range() -> None:
    feats = log_mel(_noise(1.0, -40), SPEC)
    assert feats.shape == SPEC.input_shape
    assert feats.dtype == np.float32
    assert feats.min() >= 0.0 and feats.max() <= 1.0


def test_features_are_deterministic() -> None:
    audio = _noise(1.0, -30, seed=3)
    assert np.array_equal(log_mel(audio, SPEC), log_mel(audio.copy(), SPEC))


def test_twenty_db_louder_noise_raises_features_by_a_fifth_of_the_range() -> None:
    # The fixed 100 dB range maps to [0, 1]: +20 dB must move every unclipped value by 0.2.
    quiet, loud = log_mel(_noise(1.0, -60), SPEC), log_mel(_noise(1.0, -40), SPEC)
    assert np.allclose(loud - quiet, 0.2, atol=1e-4)


def test_sine_peaks_in_the_band_of_its_frequency_near_full_scale() -> None:
    t = np.arange(SPEC.sample_rate) / SPEC.sample_rate
    feats = log_mel(np.sin(2 * np.pi * 1000.0 * t), SPEC)
    peak_band = int(np.argmax(feats.mean(axis=0)))
    mel = 2595 * np.log10(1 + np.array([SPEC.fmin_hz, 1000.0, SPEC.fmax_hz]) / 700)
    expected_band = (mel[1] - mel[0]) / (mel[2] - mel[0]) * (SPEC.n_mels + 1) - 1
    assert abs(peak_band - expected_band) <= 1
    assert feats.max() > 0.95  # full-scale sine is about 0 dBFS


def test_stream_frames_equal_window_features() -> None:
    """The device may compute frames once for a stream; slicing must equal per-window features."""
    audio = _noise(3.0, -35, seed=5)
    stream = log_mel(audio, SPEC)
    k = 37
    window = audio[k * SPEC.hop_samples : k * SPEC.hop_samples + SPEC.window_samples]
    assert np.allclose(stream[k : k + SPEC.frames_per_window], log_mel(window, SPEC), atol=1e-6)


def test_quantize_round_trip_within_half_a_step() -> None:
    feats = log_mel(_noise(1.0, -45), SPEC)
    stored = quantize_features(feats)
    assert stored.dtype == np.uint8
    assert np.abs(dequantize_features(stored) - feats).max() <= 0.5 / 255 + 1e-7


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros((2, 16000)), "1-D"),
        (np.zeros(16000, dtype=np.int16), "float"),
        (np.zeros(100), "fewer than one frame"),
        (np.full(16000, np.nan), "NaN"),
    ],
)
def test_bad_audio_is_refused_with_a_clear_message(audio: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        log_mel(audio, SPEC)


def test_dequantize_refuses_other_dtypes() -> None:
    with pytest.raises(ValueError, match="uint8"):
        dequantize_features(np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frame_samples": 1024}, "n_fft"),
        ({"fmax_hz": 9000.0}, "Nyquist"),
        ({"fmin_hz": 8000.0, "fmax_hz": 7000.0}, "fmin_hz"),
        ({"db_floor": 0.0}, "db_floor"),
        ({"n_mels": 0}, "n_mels"),
    ],
)
def test_inconsistent_spec_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FeatureSpec(**kwargs)


def test_feature_module_does_not_import_tensorflow() -> None:
    code = "import sys, converters.features; sys.exit(1 if 'tensorflow' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
