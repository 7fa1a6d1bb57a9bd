"""The demo's two releases of the KWS primary, made for real (Keras -> converters.convert_model):

* **good** (``1.1.0``): the chain's primary (``ds_cnn``) fine-tuned for one epoch, with its decision
  calibrated into the model. A device runs a release outside its chain at the task's default detection
  threshold (0.8), not at the primary's calibrated 0.98, so the logits are scaled (temperature) until
  the share of non-keyword evaluation windows that fire at 0.8 matches the primary's at 0.98.
* **bad** (``1.2.0``): the good model with one keyword class's output bias raised, as a broken
  export or a mislabeled fine-tune would do: it fires on many more non-keyword windows (false wakes)
  while still converting and validating cleanly. Its false-positive rate on the simulated streams is
  really worse; the rollout gate sees it only through the devices' reported counts.

Both keep the converter report name of the chain's primary (``kws_ds_cnn``), so devices report them as
that model (the rollout compares windows by model name and release counter).

Calibration data = windows of the deployment environment: the nominal continuous recording the simulated
devices hear (``firmware_stubs.sensors``), not the isolated training clips. The converter derives the
release's drift baselines from it, so the baseline describes the field at release time: undrifted
devices are near PSI 0, and the louder noise floor of the drift step is a real shift against it. (With
the training clips as baseline every device is "drifted": PSI > 4 on the clean stream.)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GOOD_VERSION = "1.1.0"
BAD_VERSION = "1.2.0"
PRIMARY_DIR = "ds_cnn"
# The bad model: at least this share of non-keyword evaluation windows fires (the primary: ~1-2 %).
BAD_FALSE_FIRE_SHARE = 0.15

CALIBRATION = "nominal-stream"
CALIBRATION_WINDOWS = 400

Progress = Callable[[str, float], None]


def deployment_windows(n: int, seed: int) -> np.ndarray:
    """``n`` windows of the nominal field recording (what the devices hear before any drift)."""
    from firmware_stubs.sensors import task_pools

    pool = task_pools("kws").nominal.windows
    rng = np.random.default_rng(seed)
    return np.asarray(pool[rng.choice(len(pool), size=min(n, len(pool)), replace=False)], dtype=np.float32)


class ReleaseModelError(RuntimeError):
    """The release models cannot be made (chain missing, conversion failed); says why."""


@dataclass(frozen=True)
class ReleaseModels:
    model_name: str  # the converter report name devices report (= catalog model name)
    good_dir: Path
    bad_dir: Path
    good_false_fire: float  # share of non-keyword eval windows firing at the task threshold
    bad_false_fire: float
    primary_false_fire: float
    reused: bool


def _valid(directory: Path) -> bool:
    from converters.report import ConversionReport

    try:
        report = ConversionReport.read(directory)
    except Exception:
        return False
    return all((directory / v.file).is_file() for v in report.variants.values())


def _false_fire(scores: np.ndarray, y: np.ndarray, positive: list[int], threshold: float) -> float:
    negatives = ~np.isin(y, positive)
    fired = scores[:, positive].max(axis=1) >= threshold
    return float(fired[negatives].mean()) if negatives.any() else 0.0


def _logits(model: object, x: np.ndarray) -> np.ndarray:
    import keras

    last = model.layers[-1]  # type: ignore[attr-defined]
    features = keras.Model(model.inputs, last.input)  # type: ignore[attr-defined]
    w, b = last.get_weights()
    return np.asarray(features.predict(x, verbose=0), dtype=np.float64) @ w + b


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def make_release_models(
    chain_dir: Path, out_dir: Path, *, seed: int = 0, progress: Progress | None = None
) -> ReleaseModels:
    """Build (or reuse, when both directories hold a valid conversion) the good and bad releases."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from converters.reference.chain import ChainReport

    report = ProgressProxy(progress)
    try:
        chain = ChainReport.read(chain_dir)
    except Exception as exc:
        raise ReleaseModelError(f"no usable chain in {chain_dir}: {exc}") from exc
    if chain.task != "kws":
        raise ReleaseModelError(f"the demo releases are made from the KWS chain, not {chain.task!r}")
    primary = next((e for e in chain.entries if e.rank == 0), None)
    if primary is None or not (chain_dir / primary.artifact_dir / "model.keras").is_file():
        raise ReleaseModelError(f"{chain_dir}: the primary's model.keras is missing")
    model_name = f"kws_{primary.name}"
    good_dir, bad_dir = out_dir / GOOD_VERSION, out_dir / BAD_VERSION
    marker = out_dir / "release-models.json"
    if _valid(good_dir) and _valid(bad_dir) and marker.is_file():
        import json

        meta = json.loads(marker.read_text())
        if meta.get("calibration") == CALIBRATION:
            return ReleaseModels(
                model_name, good_dir, bad_dir, meta["good"], meta["bad"], meta["primary"], True
            )

    import keras

    from converters.config import ConversionConfig, TaskInfo
    from converters.pipeline import convert_model
    from converters.reference.chain import load_task

    report("loading the KWS data", 0.0)
    data = load_task("kws")
    positive = list(chain.metadata.positive_class_ids)
    threshold = chain.metadata.score_threshold
    keras.utils.set_random_seed(seed)
    model = keras.models.load_model(chain_dir / primary.artifact_dir / "model.keras")
    primary_scores = np.asarray(model.predict(data.x_eval, verbose=0))
    primary_fire = _false_fire(primary_scores, data.y_eval, positive, chain.threshold_for(primary))

    report("fine-tuning the primary (1 epoch)", 0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, epochs=1, batch_size=64, verbose=0)

    # Temperature: scale the logits so the task threshold fires as often as the primary's own did.
    logits = _logits(model, data.x_eval)
    grid = np.linspace(0.5, 20.0, 79)
    rates = [_false_fire(_softmax(k * logits), data.y_eval, positive, threshold) for k in grid]
    k = float(grid[int(np.argmin([abs(r - primary_fire) for r in rates]))])
    last = model.layers[-1]
    w, b = last.get_weights()
    last.set_weights([w * k, b * k])
    good_fire = _false_fire(_softmax(k * logits), data.y_eval, positive, threshold)

    # Bad: raise one keyword's bias (a class that "absorbed" noise) until enough non-keyword windows fire.
    hot = positive[0]
    shift = 0.0
    bad_fire = good_fire
    for shift in np.arange(0.25, 40.0, 0.25):
        z = k * logits
        z[:, hot] += shift
        bad_fire = _false_fire(_softmax(z), data.y_eval, positive, threshold)
        if bad_fire >= BAD_FALSE_FIRE_SHARE:
            break

    calibration = deployment_windows(CALIBRATION_WINDOWS, seed)
    task = TaskInfo(
        class_names=chain.metadata.class_names, positive_class_ids=positive, score_threshold=threshold
    )
    # Lighter validation than a production conversion (fewer latency runs, a smaller TFLM evaluation
    # set): the demo needs the artifacts, baselines and golden file, not publication-grade timings.
    config = ConversionConfig(
        seed=seed, overwrite=True, latency_warmup_runs=2, latency_runs=10, tflm_eval_size=100
    )
    report("converting the good release", 0.3)
    try:
        convert_model(model, calibration, data.x_eval, data.y_eval, name=model_name, version=GOOD_VERSION,
                      out_dir=good_dir, config=config, task=task)  # fmt: skip
        bias = b * k
        bias[hot] += shift
        last.set_weights([w * k, bias])
        report("converting the bad release", 0.65)
        convert_model(model, calibration, data.x_eval, data.y_eval, name=model_name, version=BAD_VERSION,
                      out_dir=bad_dir, config=config, task=task)  # fmt: skip
    except Exception as exc:
        raise ReleaseModelError(f"converting the release models failed: {exc}") from exc
    import json

    marker.write_text(
        json.dumps(
            {
                "good": good_fire,
                "bad": bad_fire,
                "primary": primary_fire,
                "temperature": k,
                "bias_shift": shift,
                "calibration": CALIBRATION,
            }
        )
    )
    report("release models ready", 1.0)
    return ReleaseModels(model_name, good_dir, bad_dir, good_fire, bad_fire, primary_fire, False)


class ProgressProxy:
    def __init__(self, progress: Progress | None) -> None:
        self._p = progress

    def __call__(self, description: str, fraction: float) -> None:
        if self._p is not None:
            self._p(description, fraction)
