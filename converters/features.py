"""Numpy-only log-mel front end shared by training (server) and inference (device agent).

Must not import TensorFlow: the device agent imports this module to repeat the exact preprocessing
the model was trained on. The output is normalised to [0, 1] from a fixed dBFS range (not per
utterance), so a change of the acoustic noise floor stays visible in the features — that is what
drift monitoring looks for.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class FeatureSpec(BaseModel):
    """Everything needed to turn raw audio into the model's input, identically on every device."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_rate: int = Field(16_000, gt=0)
    window_s: float = Field(1.0, gt=0, description="length of one model input window")
    frame_samples: int = Field(480, gt=0, description="30 ms analysis frame at 16 kHz")
    hop_samples: int = Field(320, gt=0, description="20 ms hop at 16 kHz")
    n_fft: int = Field(512, gt=0)
    n_mels: int = Field(20, gt=0)
    fmin_hz: float = Field(60.0, ge=0)
    fmax_hz: float = Field(7_600.0, gt=0)
    # Fixed dBFS range mapped to [0, 1]: audio is float in [-1, 1], so 0 dB is a full-scale sine.
    db_floor: float = -100.0
    db_ceiling: float = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.frame_samples > self.n_fft:
            raise ValueError(f"frame_samples ({self.frame_samples}) must be <= n_fft ({self.n_fft})")
        if self.fmax_hz > self.sample_rate / 2:
            raise ValueError(f"fmax_hz ({self.fmax_hz}) above Nyquist ({self.sample_rate / 2})")
        if self.fmin_hz >= self.fmax_hz:
            raise ValueError("fmin_hz must be below fmax_hz")
        if self.db_floor >= self.db_ceiling:
            raise ValueError("db_floor must be below db_ceiling")
        if self.window_samples < self.frame_samples:
            raise ValueError("window shorter than one frame")
        return self

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def frames_per_window(self) -> int:
        return 1 + (self.window_samples - self.frame_samples) // self.hop_samples

    @property
    def input_shape(self) -> tuple[int, int]:
        """Shape of one model input (frames, mel bands), without batch or channel axes."""
        return (self.frames_per_window, self.n_mels)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular HTK-style filters, shape (n_fft // 2 + 1, n_mels)."""
    n_bins = n_fft // 2 + 1
    bin_hz = np.linspace(0.0, sample_rate / 2, n_bins)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    bank = np.zeros((n_bins, n_mels), dtype=np.float64)
    for m in range(n_mels):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (bin_hz - lo) / (centre - lo)
        falling = (hi - bin_hz) / (hi - centre)
        bank[:, m] = np.clip(np.minimum(rising, falling), 0.0, None)
    bank.setflags(write=False)
    return bank


@lru_cache(maxsize=8)
def _window(frame_samples: int) -> np.ndarray:
    w = np.hanning(frame_samples + 1)[:-1]  # periodic Hann
    w.setflags(write=False)
    return w


def log_mel(audio: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Log-mel spectrogram of mono audio (float in [-1, 1]) -> float32 (frames, n_mels) in [0, 1].

    Frames are taken every ``hop_samples`` from sample 0 and only where a whole frame fits, so
    the features of a long stream, sliced every ``frames_per_window`` frames, equal the features of
    the corresponding audio slices (the device may compute frames incrementally).
    """
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"audio must be 1-D mono, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"audio must be float in [-1, 1], got dtype {x.dtype}")
    if x.size < spec.frame_samples:
        raise ValueError(f"audio has {x.size} samples, fewer than one frame ({spec.frame_samples})")
    if not np.all(np.isfinite(x)):
        raise ValueError("audio contains NaN or infinity")
    x = x.astype(np.float64, copy=False)
    n_frames = 1 + (x.size - spec.frame_samples) // spec.hop_samples
    idx = np.arange(spec.frame_samples)[None, :] + spec.hop_samples * np.arange(n_frames)[:, None]
    frames = x[idx] * _window(spec.frame_samples)
    spectrum = np.fft.rfft(frames, n=spec.n_fft, axis=1)
    # Power normalised so that a full-scale sine lands near 0 dBFS.
    power = (np.abs(spectrum) ** 2) / (np.sum(_window(spec.frame_samples)) ** 2 / 4.0)
    mel = power @ _mel_filterbank(spec.sample_rate, spec.n_fft, spec.n_mels, spec.fmin_hz, spec.fmax_hz)
    db = 10.0 * np.log10(mel + 1e-12)
    scaled = (db - spec.db_floor) / (spec.db_ceiling - spec.db_floor)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def quantize_features(features: np.ndarray) -> np.ndarray:
    """[0, 1] float features -> uint8 (scale 1/255), the compact storage format."""
    return np.round(np.clip(features, 0.0, 1.0) * 255.0).astype(np.uint8)


def dequantize_features(stored: np.ndarray) -> np.ndarray:
    if stored.dtype != np.uint8:
        raise ValueError(f"stored features must be uint8, got {stored.dtype}")
    return stored.astype(np.float32) / 255.0
