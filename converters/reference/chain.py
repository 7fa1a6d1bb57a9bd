"""Build a reference fallback chain: train every model, convert it, order by measured cost, write chain.json.

Layout of out_dir: one artifact directory per model (written by ``converters.pipeline.convert_model``)
and ``chain.json`` (a ``ChainReport``). The chain is built under a hidden temporary name next to
out_dir and renamed into place, so a failure leaves any earlier chain at out_dir untouched.

Cost = full_int8 steady LiteRT latency x measured TFLM arena bytes: time and memory are what a
device trades when it falls back (battery and RAM pressure). Entries run from most to least
expensive; a device starts at the first entry its hardware fits and moves down the list.

KWS detection threshold: each entry carries its own ``threshold``, calibrated on a separate
calibration stream (``threshold_calibration``), and the nominal/loud stream metrics are measured at
it. ``metadata.score_threshold`` stays the task-wide default for readers of older files and older
agents; when an entry has a ``threshold``, the entry's value wins (``ChainReport.threshold_for``).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from converters.features import FeatureSpec
from converters.reference.datasets import DatasetError, TaskData, load_kws_stream, load_kws_task
from converters.reference.digits import load_digits_task
from converters.reference.kws_data import CALIBRATION_STREAM_LABEL
from converters.reference.model_zoo import TaskName, recipes
from converters.reference.stream_eval import StreamMetrics, evaluate_stream, window_scores
from converters.reference.threshold_calibration import (
    DEFAULT_TARGET_FA_PER_HOUR,
    DEFAULT_THRESHOLDS,
    CalibrationError,
    ThresholdCalibration,
    calibrate_threshold,
    check_calibration_request,
)

CHAIN_FILE = "chain.json"
SCHEMA_VERSION = "1.1"  # 1.1: per-entry threshold + calibration (1.0 files still load)
TASKS: tuple[TaskName, ...] = ("kws", "digits")
# Task-wide default (kept for readers of schema 1.0); each KWS entry carries its calibrated threshold.
# A keyword fires only when clearly above the other classes; 1 s suppression = one word per wake.
KWS_THRESHOLD = 0.8
KWS_SUPPRESSION_S = 1.0
KWS_STRIDE_FRAMES = 5  # 100 ms between windows on the device
STREAM_LABELS: tuple[str, ...] = ("nominal", "loud")
# Tiny models run in microseconds, where one invoke's overhead dominates: more runs, steadier median.
LATENCY_RUNS = 200

ChainProgress = Callable[[str, float], None]


class ChainError(RuntimeError):
    """The chain cannot be built (bad task, output exists, a conversion failed); names the problem."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskMetadata(_Model):
    """What a device needs to run any model of the chain: classes, decision rule, preprocessing."""

    task: TaskName
    class_names: list[str]
    positive_class_ids: list[int]
    score_threshold: float
    suppression_s: float | None = None
    window_stride_s: float | None = None
    input_shape: list[int]  # one sample, no batch dimension
    feature_spec: FeatureSpec | None = None  # None: inputs are the raw pixels (digits)


class EntryMeasurements(_Model):
    train_seconds: float
    convert_seconds: float
    stream_eval_seconds: float


class ChainEntry(_Model):
    rank: int  # 0 = primary (most expensive); devices fall back to higher ranks
    name: str
    description: str
    artifact_dir: str  # relative to the chain directory
    parameters: int
    float32_bytes: int
    full_int8_bytes: int
    full_int8_latency_steady_us: float  # measured; also in the model's report.json
    tflm_arena_bytes: int | None
    cost: float = Field(
        description="full_int8 latency_steady_us x TFLM arena bytes (or LiteRT RAM if no arena)"
    )
    float_accuracy: float
    full_int8_accuracy: float
    full_int8_delta_pp: float
    full_int8_status: Literal["accepted", "rejected"]
    full_int8_rejection_reason: str | None
    tflm_accuracy: float | None
    default_variants: dict[str, str | None]  # hardware class -> variant it runs by default (None: no fit)
    # KWS only: the entry's detection threshold (wins over metadata.score_threshold) and how it was chosen.
    # Absent in schema 1.0 files: the task-wide threshold applies.
    threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    calibration: ThresholdCalibration | None = None
    streams: dict[str, StreamMetrics] = {}  # KWS only: metrics per noise floor at the entry's threshold
    measurements: EntryMeasurements


class ChainMeasurements(_Model):
    created_at: float
    total_seconds: float
    train_seconds: float
    convert_seconds: float


class ChainReport(_Model):
    schema_version: str = SCHEMA_VERSION
    task: TaskName
    version: str
    seed: int
    metadata: TaskMetadata
    ordering: str = "descending cost = full_int8 latency_steady_us x tflm arena_bytes"
    entries: list[ChainEntry]
    measurements: ChainMeasurements

    def threshold_for(self, entry: ChainEntry) -> float:
        """The detection threshold a device should use with ``entry``: its own, else the task's."""
        return entry.threshold if entry.threshold is not None else self.metadata.score_threshold

    def write(self, directory: Path) -> Path:
        path = Path(directory) / CHAIN_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory_or_file: str | Path) -> ChainReport:
        path = Path(directory_or_file)
        if path.is_dir():
            path = path / CHAIN_FILE
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ChainError(f"{path}: cannot read chain report ({exc})") from exc
        except ValidationError as exc:
            raise ChainError(
                f"{path}: not a valid chain report ({exc.error_count()} problems: {exc})"
            ) from exc


def load_task(task: str) -> TaskData:
    if task == "kws":
        return load_kws_task()
    if task == "digits":
        return load_digits_task()
    raise ChainError(f"unknown reference task {task!r}; known: {', '.join(TASKS)}")


def task_metadata(task: TaskName, data: TaskData) -> TaskMetadata:
    if task == "kws":
        spec = data.feature_spec
        stride = KWS_STRIDE_FRAMES * spec.hop_samples / spec.sample_rate if spec else None
        return TaskMetadata(
            task=task,
            class_names=data.class_names,
            positive_class_ids=data.positive_class_ids,
            score_threshold=KWS_THRESHOLD,
            suppression_s=KWS_SUPPRESSION_S,
            window_stride_s=stride,
            input_shape=list(data.input_shape),
            feature_spec=spec,
        )
    return TaskMetadata(
        task=task,
        class_names=data.class_names,
        positive_class_ids=data.positive_class_ids,
        score_threshold=0.5,
        input_shape=list(data.input_shape),
    )


def build_reference_chain(
    task: Literal["kws", "digits"],
    out_dir: str | os.PathLike[str],
    *,
    version: str = "1.0.0",
    seed: int = 0,
    progress: ChainProgress | None = None,
    overwrite: bool = False,
    target_fa_per_hour: float = DEFAULT_TARGET_FA_PER_HOUR,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> ChainReport:
    """Train, convert, validate and order the chain of ``task``; see the module docstring.

    KWS only: ``target_fa_per_hour`` and ``thresholds`` drive the per-model threshold calibration.
    """
    from converters.errors import ConversionError

    if task not in TASKS:
        raise ChainError(f"unknown reference task {task!r}; known: {', '.join(TASKS)}")
    try:
        grid = check_calibration_request(thresholds, target_fa_per_hour)
    except CalibrationError as exc:
        raise ChainError(f"{task}: threshold calibration: {exc}") from exc
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ChainError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ChainError(f"output directory {out} already exists and is not empty (use overwrite)")
    report_progress = progress or (lambda _description, _fraction: None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        try:
            report = _build_into(task, tmp, version, seed, report_progress, grid, target_fa_per_hour)
        except ConversionError as exc:
            raise ChainError(f"{task}: conversion failed: {exc}") from exc
        except DatasetError as exc:
            raise ChainError(f"{task}: reference data unusable: {exc}") from exc
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report_progress(f"{task}: chain written", 1.0)
    return report


def _move_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _build_into(
    task: TaskName,
    work: Path,
    version: str,
    seed: int,
    progress: ChainProgress,
    thresholds: Sequence[float],
    target_fa_per_hour: float,
) -> ChainReport:
    from converters.config import ConversionConfig, TaskInfo
    from converters.pipeline import convert_model
    from converters.reference.training import train

    started = time.perf_counter()
    created = time.time()
    data = load_task(task)
    meta = task_metadata(task, data)
    streams = {label: load_kws_stream(label) for label in STREAM_LABELS} if task == "kws" else {}
    calibration_stream = load_kws_stream(CALIBRATION_STREAM_LABEL) if task == "kws" else None
    task_info = TaskInfo(
        class_names=meta.class_names,
        positive_class_ids=meta.positive_class_ids,
        score_threshold=meta.score_threshold,
    )
    chain_recipes = recipes(task)
    unordered: list[ChainEntry] = []
    for i, recipe in enumerate(chain_recipes):
        base, share = i / len(chain_recipes), 1.0 / len(chain_recipes)
        progress(f"{task}/{recipe.name}: training", base)
        trained = train(recipe, data, seed=seed)

        def stage(
            description: str,
            fraction: float,
            _name: str = recipe.name,
            _base: float = base,
            _share: float = share,
        ) -> None:
            progress(f"{task}/{_name}: {description}", _base + _share * (0.3 + 0.6 * fraction))

        t0 = time.perf_counter()
        conv = convert_model(
            trained.model,
            data.x_cal,
            data.x_eval,
            data.y_eval,
            name=f"{task}_{recipe.name}",
            version=version,
            out_dir=work / recipe.name,
            config=ConversionConfig(seed=seed),
            task=task_info,
            progress=stage,
        )
        convert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics: dict[str, StreamMetrics] = {}
        calibration: ThresholdCalibration | None = None
        if calibration_stream is not None:
            progress(f"{task}/{recipe.name}: threshold calibration", base + share * 0.91)
            tflite = work / recipe.name / conv.variants["full_int8"].file
            ends_s, scores = window_scores(tflite, calibration_stream, stride_frames=KWS_STRIDE_FRAMES)
            calibration = calibrate_threshold(
                ends_s,
                scores,
                calibration_stream,
                meta.positive_class_ids,
                stream_label=CALIBRATION_STREAM_LABEL,
                suppression_s=KWS_SUPPRESSION_S,
                stride_s=meta.window_stride_s or 0.1,
                thresholds=thresholds,
                target_fa_per_hour=target_fa_per_hour,
            )
            progress(f"{task}/{recipe.name}: stream false activations / rejections", base + share * 0.95)
            metrics = {
                label: evaluate_stream(
                    tflite,
                    stream,
                    meta.positive_class_ids,
                    threshold=calibration.threshold,
                    suppression_s=KWS_SUPPRESSION_S,
                    stride_frames=KWS_STRIDE_FRAMES,
                )
                for label, stream in streams.items()
            }
        int8 = conv.variants["full_int8"]
        arena = conv.tflm.arena_bytes if conv.tflm is not None else None
        unordered.append(
            ChainEntry(
                rank=-1,
                name=recipe.name,
                description=recipe.description,
                artifact_dir=recipe.name,
                parameters=conv.model.parameters,
                float32_bytes=conv.variants["float32"].bytes,
                full_int8_bytes=int8.bytes,
                full_int8_latency_steady_us=int8.latency_steady_us,
                tflm_arena_bytes=arena,
                cost=int8.latency_steady_us * (arena if arena is not None else int8.ram_bytes),
                float_accuracy=conv.model.float_accuracy,
                full_int8_accuracy=int8.accuracy,
                full_int8_delta_pp=int8.accuracy_delta_pp,
                full_int8_status=int8.status,
                full_int8_rejection_reason=int8.rejection_reason,
                tflm_accuracy=conv.tflm.accuracy if conv.tflm is not None else None,
                default_variants={p: fit.default_variant for p, fit in conv.hardware_fit.items()},
                threshold=calibration.threshold if calibration is not None else None,
                calibration=calibration,
                streams=metrics,
                measurements=EntryMeasurements(
                    train_seconds=round(trained.train_seconds, 3),
                    convert_seconds=round(convert_s, 3),
                    stream_eval_seconds=round(time.perf_counter() - t0, 3),
                ),
            )
        )
    ordered = sorted(unordered, key=lambda e: e.cost, reverse=True)
    entries = [e.model_copy(update={"rank": r}) for r, e in enumerate(ordered)]
    report = ChainReport(
        task=task,
        version=version,
        seed=seed,
        metadata=meta,
        entries=entries,
        measurements=ChainMeasurements(
            created_at=created,
            total_seconds=round(time.perf_counter() - started, 3),
            train_seconds=round(sum(e.measurements.train_seconds for e in entries), 3),
            convert_seconds=round(sum(e.measurements.convert_seconds for e in entries), 3),
        ),
    )
    report.write(work)
    return report
