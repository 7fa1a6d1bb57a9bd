"""Synthetic keyword-spotting data: espeak-ng speech + seeded noise -> log-mel features.

Regenerate the committed files with::

    python -m converters.reference.kws_data --out converters/reference/data --seed 0

Every example is drawn from its own generator seeded by ``(seed, index)``, so any slice can be
regenerated alone (the tests do) and the output is deterministic for a given espeak-ng build.
The continuous stream (noise + unknown words + sparse keywords with known onsets) is generated at
a chosen noise floor: that floor is the drift knob ("acoustic environment change").
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from converters.features import FeatureSpec, log_mel, quantize_features

KEYWORDS: tuple[str, ...] = ("yes", "no", "up", "down")
CLASS_NAMES: tuple[str, ...] = ("silence", "unknown", *KEYWORDS)
POSITIVE_CLASS_IDS: tuple[int, ...] = tuple(range(2, len(CLASS_NAMES)))
UNKNOWN_WORDS: tuple[str, ...] = (
    "left", "right", "on", "off", "bed", "bird", "cat", "dog", "house", "tree", "zero", "one",
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "wow", "happy", "marvin",
    "learn", "follow", "forward", "backward", "visual", "sheila", "green", "water", "music",
)  # fmt: skip
VOICES: tuple[str, ...] = ("en", "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan")
VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4")
SNR_DB: tuple[float, ...] = (30.0, 20.0, 10.0, 5.0)
NOISE_COLOURS: tuple[str, ...] = ("white", "pink", "brown")
NOMINAL_NOISE_DBFS = -55.0
LOUD_NOISE_DBFS = -35.0
DATASET_FILE = "kws_dataset.npz"
STREAM_FILE_TEMPLATE = "kws_stream_{label}.npz"
META_FILE = "kws_meta.json"
# Threshold calibration runs on its own nominal-floor stream (other seed = other words, voices, noise),
# so the nominal/loud streams the chain reports on stay held out. 600 s: one false wake = 6 per hour.
CALIBRATION_STREAM_LABEL = "calibration"
CALIBRATION_STREAM_SEED = 1
CALIBRATION_STREAM_S = 600.0


class KwsDataError(RuntimeError):
    """Data cannot be generated (espeak-ng missing or failing) or a stored file is malformed."""


class StreamEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    onset_s: float
    offset_s: float
    class_id: int
    word: str


# ---------------------------------------------------------------------------------------- audio


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling via the real FFT (truncate/zero-pad the spectrum)."""
    if src_rate == dst_rate:
        return x
    n_out = round(x.size * dst_rate / src_rate)
    spectrum = np.fft.rfft(x)
    keep = n_out // 2 + 1
    out = np.zeros(keep, dtype=complex)
    out[: min(keep, spectrum.size)] = spectrum[: min(keep, spectrum.size)]
    return np.fft.irfft(out, n=n_out) * (n_out / x.size)


def synthesize(
    word: str, *, voice: str, variant: str, speed: int, pitch: int, sample_rate: int, workdir: Path
) -> np.ndarray:
    """Speak ``word`` with espeak-ng; float audio in [-1, 1] at ``sample_rate``, silence trimmed."""
    if not espeak_available():
        raise KwsDataError("espeak-ng is not installed (apt-get install espeak-ng)")
    wav_path = workdir / "word.wav"
    cmd = [
        "espeak-ng",
        "-v",
        f"{voice}+{variant}",
        "-s",
        str(speed),
        "-p",
        str(pitch),
        "-w",
        str(wav_path),
        word,
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        raise KwsDataError(f"espeak-ng failed for {word!r}: {done.stderr.decode(errors='replace').strip()}")
    with wave.open(io.BytesIO(wav_path.read_bytes())) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise KwsDataError("espeak-ng produced an unexpected WAV format")
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    audio = _resample(pcm, rate, sample_rate)
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.max(np.abs(audio)))
    if loud.size == 0:
        raise KwsDataError(f"espeak-ng produced silence for {word!r}")
    return audio[loud[0] : loud[-1] + 1]


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise: white (flat), pink (1/f power) or brown (1/f^2 power), shaped in the FFT."""
    white = rng.standard_normal(n)
    if colour == "white":
        shaped = white
    else:
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1]
        exponent = {"pink": 0.5, "brown": 1.0}[colour]
        shaped = np.fft.irfft(spectrum / f**exponent, n=n)
    return shaped / np.sqrt(np.mean(shaped**2))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def _db_to_amp(db: float) -> float:
    return float(10.0 ** (db / 20.0))


# -------------------------------------------------------------------------------------- dataset


def _random_voice(rng: np.random.Generator) -> dict[str, object]:
    return {
        "voice": VOICES[rng.integers(len(VOICES))],
        "variant": VARIANTS[rng.integers(len(VARIANTS))],
        "speed": int(rng.integers(110, 210)),
        "pitch": int(rng.integers(15, 90)),
    }


def make_example(index: int, seed: int, spec: FeatureSpec, workdir: Path) -> tuple[np.ndarray, int]:
    """Example ``index`` of the dataset: (features (frames, mels) float32, class id). Balanced classes."""
    rng = np.random.default_rng([seed, index])
    class_id = index % len(CLASS_NAMES)
    n = spec.window_samples
    noise = coloured_noise(n, NOISE_COLOURS[rng.integers(len(NOISE_COLOURS))], rng)
    if CLASS_NAMES[class_id] == "silence":
        audio = noise * _db_to_amp(float(rng.uniform(-75.0, -25.0)))
    else:
        # Half of the "unknown" examples are fragments of any word (keywords included) cut by the window
        # edge: a sliding window sees every word enter and leave, and a fragment must not fire.
        fragment = class_id == 1 and rng.random() < 0.5
        vocabulary = UNKNOWN_WORDS + KEYWORDS if fragment else UNKNOWN_WORDS
        word = vocabulary[rng.integers(len(vocabulary))] if class_id == 1 else CLASS_NAMES[class_id]
        speech = synthesize(word, sample_rate=spec.sample_rate, workdir=workdir, **_random_voice(rng))  # type: ignore[arg-type]
        speech = speech[:n]  # a slow voice may exceed the window; keep the onset
        speech = speech * (_db_to_amp(float(rng.uniform(-30.0, -12.0))) / _rms(speech))
        leaving = bool(rng.random() < 0.5)
        if fragment:  # 10-45 % of the word: its tail leaving the window or its head entering it
            keep = max(1, int(speech.size * rng.uniform(0.1, 0.45)))
            speech = speech[-keep:] if leaving else speech[:keep]
        audio = np.zeros(n)
        edge_start = 0 if leaving else n - speech.size
        start = edge_start if fragment else int(rng.integers(0, n - speech.size + 1))
        audio[start : start + speech.size] = speech
        snr = SNR_DB[rng.integers(len(SNR_DB))]
        audio = audio + noise * (_rms(speech) / _db_to_amp(snr))
    return log_mel(np.clip(audio, -1.0, 1.0), spec), class_id


def generate_examples(
    indices: range | list[int], seed: int, spec: FeatureSpec, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    feats = np.zeros((len(indices), *spec.input_shape), dtype=np.float32)
    labels = np.zeros(len(indices), dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="kws-") as tmp:
        for k, i in enumerate(indices):
            feats[k], labels[k] = make_example(i, seed, spec, Path(tmp))
            if progress and k % 200 == 0:
                print(f"  example {k}/{len(indices)}", file=sys.stderr)
    return feats, labels


def split_indices(n: int, seed: int) -> dict[str, np.ndarray]:
    """Deterministic 70 / 10 / 20 train / calibration / eval split."""
    order = np.random.default_rng([seed, 7_919]).permutation(n)
    n_train, n_cal = int(0.7 * n), int(0.1 * n)
    return {
        "train": np.sort(order[:n_train]),
        "calibration": np.sort(order[n_train : n_train + n_cal]),
        "eval": np.sort(order[n_train + n_cal :]),
    }


# --------------------------------------------------------------------------------------- stream


def make_stream(
    seed: int, spec: FeatureSpec, *, duration_s: float = 300.0, noise_dbfs: float = NOMINAL_NOISE_DBFS
) -> tuple[np.ndarray, list[StreamEvent]]:
    """Continuous stream: (features (frames, mels) float32, ground-truth events).

    The word schedule and voices depend only on ``seed``; the noise floor only scales the
    background, so two floors give the same speech at the same times (a clean drift knob).
    """
    rng = np.random.default_rng([seed, 31_337])
    n = round(duration_s * spec.sample_rate)
    audio = coloured_noise(n, "pink", rng) * 0.7 + coloured_noise(n, "white", rng) * 0.3
    audio = audio / _rms(audio) * _db_to_amp(noise_dbfs)
    events: list[StreamEvent] = []
    t = float(rng.uniform(1.0, 3.0))
    with tempfile.TemporaryDirectory(prefix="kws-stream-") as tmp:
        while t < duration_s - 2.0:
            is_keyword = rng.random() < 0.3  # sparse keywords among other words
            class_id = int(rng.integers(2, len(CLASS_NAMES))) if is_keyword else 1
            word = CLASS_NAMES[class_id] if is_keyword else UNKNOWN_WORDS[rng.integers(len(UNKNOWN_WORDS))]
            speech = synthesize(word, sample_rate=spec.sample_rate, workdir=Path(tmp), **_random_voice(rng))  # type: ignore[arg-type]
            speech = speech * (_db_to_amp(float(rng.uniform(-26.0, -14.0))) / _rms(speech))
            start = round(t * spec.sample_rate)
            end = min(start + speech.size, n)
            audio[start:end] += speech[: end - start]
            events.append(
                StreamEvent(
                    onset_s=start / spec.sample_rate,
                    offset_s=end / spec.sample_rate,
                    class_id=class_id,
                    word=word,
                )
            )
            t = end / spec.sample_rate + float(rng.exponential(3.0)) + 1.2  # gap >= window
    return log_mel(np.clip(audio, -1.0, 1.0), spec), events


# ----------------------------------------------------------------------------------------- files


def write_dataset(out: Path, *, seed: int, spec: FeatureSpec, n_examples: int, stream_s: float) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    feats, labels = generate_examples(range(n_examples), seed, spec, progress=True)
    split = split_indices(n_examples, seed)
    ds_path = out / DATASET_FILE
    np.savez_compressed(
        ds_path,
        features=quantize_features(feats),
        labels=labels.astype(np.uint8),
        feature_scale=np.float32(1.0 / 255.0),
        **{f"split_{k}": v for k, v in split.items()},
    )
    written = [ds_path]
    streams = {"nominal": NOMINAL_NOISE_DBFS, "loud": LOUD_NOISE_DBFS}
    for label, floor in streams.items():
        written.append(write_stream(out, label, seed=seed, spec=spec, duration_s=stream_s, noise_dbfs=floor))
    written.append(
        write_stream(
            out,
            CALIBRATION_STREAM_LABEL,
            seed=CALIBRATION_STREAM_SEED,
            spec=spec,
            duration_s=CALIBRATION_STREAM_S,
            noise_dbfs=NOMINAL_NOISE_DBFS,
        )
    )
    meta = {
        "seed": seed,
        "n_examples": n_examples,
        "stream_s": stream_s,
        "class_names": list(CLASS_NAMES),
        "positive_class_ids": list(POSITIVE_CLASS_IDS),
        "feature_spec": spec.model_dump(),
        "streams": streams,
        "espeak_ng": _espeak_version(),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    written.append(out / META_FILE)
    return written


def write_stream(
    out: Path, label: str, *, seed: int, spec: FeatureSpec, duration_s: float, noise_dbfs: float
) -> Path:
    """Generate one continuous stream and store it as ``kws_stream_<label>.npz`` (uint8 features)."""
    print(f"  stream {label}: seed {seed}, {duration_s:.0f} s at {noise_dbfs} dBFS", file=sys.stderr)
    frames, events = make_stream(seed, spec, duration_s=duration_s, noise_dbfs=noise_dbfs)
    path = out / STREAM_FILE_TEMPLATE.format(label=label)
    np.savez_compressed(
        path,
        frames=quantize_features(frames),
        feature_scale=np.float32(1.0 / 255.0),
        noise_dbfs=np.float32(noise_dbfs),
        events=np.array([[e.onset_s, e.offset_s, e.class_id] for e in events], dtype=np.float64),
        event_words=np.array([e.word for e in events]),
    )
    return path


def _espeak_version() -> str:
    done = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=3000, help="dataset size (balanced over 6 classes)")
    parser.add_argument("--stream-seconds", type=float, default=300.0)
    parser.add_argument(
        "--calibration-stream-only",
        action="store_true",
        help=f"write only {STREAM_FILE_TEMPLATE.format(label=CALIBRATION_STREAM_LABEL)} "
        f"(seed {CALIBRATION_STREAM_SEED}, {CALIBRATION_STREAM_S:.0f} s, nominal floor)",
    )
    args = parser.parse_args(argv)
    if args.examples < len(CLASS_NAMES) * 5:
        parser.error(f"--examples must be at least {len(CLASS_NAMES) * 5}")
    if args.stream_seconds < 10:
        parser.error("--stream-seconds must be at least 10")
    if not espeak_available():
        print("error: espeak-ng is not installed (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    if args.calibration_stream_only:
        args.out.mkdir(parents=True, exist_ok=True)
        path = write_stream(
            args.out,
            CALIBRATION_STREAM_LABEL,
            seed=CALIBRATION_STREAM_SEED,
            spec=FeatureSpec(),
            duration_s=CALIBRATION_STREAM_S,
            noise_dbfs=NOMINAL_NOISE_DBFS,
        )
        print(f"wrote {path} ({path.stat().st_size} bytes)")
        return 0
    for path in write_dataset(
        args.out, seed=args.seed, spec=FeatureSpec(), n_examples=args.examples, stream_s=args.stream_seconds
    ):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
