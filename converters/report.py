"""The conversion report (report.json): pydantic models, reading/writing and determinism diffs.

Everything a run *measures* (wall-clock timings) lives under keys named ``measurements``; everything
else is a function of (model, data, config, library versions) and must be identical between two runs
with the same inputs and seed. ``deterministic_content`` strips the measurements so that can be checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from converters.config import ConversionConfig, TaskInfo

SCHEMA_VERSION = "1.0"
REPORT_FILE = "report.json"
MEASUREMENT_KEY = "measurements"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantParams(_Model):
    scale: float | None = None  # None: tensor is not quantized
    zero_point: int | None = None


class TensorInfo(_Model):
    shape: list[int]  # batch dimension included (1)
    dtype: str  # numpy dtype name, e.g. "float32", "int8"
    quantization: QuantParams = QuantParams()


class EdgeCaseResult(_Model):
    name: str  # "zeros", "calibration_min", "calibration_max", "twice_calibration_max"
    fill_value: float  # the value every input element was set to (float domain)
    finite: bool
    in_range: bool  # every output inside the expected output range
    top1_matches_float: bool
    max_abs_error: float | None  # vs the float Keras model on the same input; None if not finite


class VariantMeasurements(_Model):
    latency_warmup_us: float  # first invoke on a fresh LiteRT interpreter (1 thread)
    latency_steady_us: float  # median of latency_runs invokes after latency_warmup_runs
    latency_runs: int


class VariantReport(_Model):
    variant: Literal["float32", "float16", "dynamic_int8", "full_int8"]
    file: str
    bytes: int
    sha256: str
    input: TensorInfo
    output: TensorInfo
    ops: list[str]
    accuracy: float  # fraction 0..1 on the evaluation set, LiteRT interpreter
    accuracy_delta_pp: float  # (accuracy - float Keras accuracy) x 100; negative = worse
    top1_agreement: float  # fraction of evaluation samples whose argmax equals the float model's
    max_abs_error: (
        float | None
    )  # dequantized outputs vs float Keras outputs, evaluation set; None if not finite
    mean_abs_error: float | None
    edge_cases: list[EdgeCaseResult]
    ram_bytes: int  # sum of all non-constant tensors at batch 1 (I/O included, no reuse: upper bound)
    status: Literal["accepted", "rejected"]
    rejection_reason: str | None = None
    measurements: VariantMeasurements

    # Convenience accessors; the values live in `measurements` so they stay out of determinism checks.
    @property
    def latency_warmup_us(self) -> float:
        return self.measurements.latency_warmup_us

    @property
    def latency_steady_us(self) -> float:
        return self.measurements.latency_steady_us


class TflmReport(_Model):
    source_file: str  # relative to the artifact directory
    header_file: str
    array_name: str  # C symbol of the model bytes; `<array_name>_len` holds the length
    ops: list[str]  # builtin operators of full_int8.tflite, sorted
    unsupported_ops: list[str]  # ops the TFLM interpreter lacks (non-empty only if no TFLM profile checked)
    arena_bytes: int | None  # measured minimum arena that allocates and invokes; None if not runnable
    arena_granularity_bytes: int  # arena_bytes is exact to this many bytes
    arena_recorded_bytes: int | None  # what TFLM's RecordingMicroAllocator reports with a large arena
    io_bytes: int  # input + output tensor bytes (the application's copy buffers)
    eval_samples: int
    accuracy: float | None  # on the first eval_samples of the (seeded) evaluation order
    agreement_with_litert: float | None  # fraction of identical top-1 vs LiteRT full_int8
    max_abs_diff_vs_litert_int8: int | None  # largest raw int8 output difference vs LiteRT


class VariantFit(_Model):
    fits: bool
    flash_bytes: int
    ram_bytes: int | None  # what the runtime of this class needs; None when it cannot run the variant
    reason: str | None = None  # why it does not fit / cannot be used; None when it fits


class HardwareFit(_Model):
    profile: str
    runtime: Literal["tflm", "litert"]
    model_flash_budget_bytes: int
    model_ram_budget_bytes: int
    variants: dict[str, VariantFit]
    fitting_variants: list[str]  # fit flash, RAM and runtime (accepted or not)
    default_variant: str | None  # first of preferred_variants that fits and is accepted
    default_reason: str | None = None  # set when default_variant is None


class BaselineFeatureSpec(_Model):
    """How a device turns one input sample into baseline features (see converters.baselines)."""

    input_shape: list[int]  # one sample, no batch dimension
    axis: int  # axis of input_shape the features run along
    group_bounds: list[int]  # feature i = mean of x over axis positions [b[i], b[i+1]) and all other axes
    description: str


class Histogram(_Model):
    name: str
    edges: list[float]  # len = bins + 1; outer bins are open-ended (values beyond edges count there)
    counts: list[int]
    fractions: list[float]


class OutputScoreSpec(_Model):
    kind: Literal["max_softmax", "positive_class_max"]
    class_ids: list[int]  # classes whose scores are maxed (all classes for max_softmax)
    apply_softmax: bool = False  # the model outputs logits: softmax them before taking the score


class Baselines(_Model):
    samples: int
    feature_spec: BaselineFeatureSpec
    features: list[Histogram]
    output_score_spec: OutputScoreSpec
    output_score: Histogram


class GoldenTolerance(_Model):
    max_abs_error_measured: float | None  # dequantized variant output vs float Keras, over golden inputs
    tolerance: float  # what a device health check should allow: max(measured x margin, floor)
    top1_agreement: float


class GoldenReport(_Model):
    file: str
    size: int
    keys: dict[str, str]  # npz key -> meaning
    tolerances: dict[str, GoldenTolerance]


class Artifact(_Model):
    bytes: int
    sha256: str


class ConversionMeasurements(_Model):
    created_at: str  # ISO-8601 UTC
    total_seconds: float
    stage_seconds: dict[str, float]


class ModelInfo(_Model):
    input_shape: list[int]  # one sample, no batch dimension
    num_classes: int
    float_accuracy: float  # float Keras model on the evaluation set
    parameters: int
    source_sha256: str  # of model.keras as stored in the artifact directory


class ConversionReport(_Model):
    schema_version: str = SCHEMA_VERSION
    name: str
    version: str
    config: ConversionConfig
    task: TaskInfo | None
    model: ModelInfo
    calibration_samples: int
    evaluation_samples: int
    variants: dict[str, VariantReport]
    tflm: TflmReport | None  # None only when full_int8 was not among the variants built
    hardware_fit: dict[str, HardwareFit]
    baselines: Baselines
    golden: GoldenReport
    versions: dict[str, str]
    artifacts: dict[str, Artifact]  # relative path -> size and hash, every file except report.json
    measurements: ConversionMeasurements = Field(description="timings: vary run to run by nature")

    def deterministic_content(self) -> dict[str, Any]:
        """The report without any `measurements` key: equal for equal inputs, seed and versions."""
        return strip_measurements(self.model_dump(mode="json"))

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / REPORT_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory_or_file: str | Path) -> ConversionReport:
        path = Path(directory_or_file)
        if path.is_dir():
            path = path / REPORT_FILE
        return cls.model_validate_json(path.read_text(encoding="utf-8"))


def strip_measurements(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_measurements(v) for k, v in value.items() if k != MEASUREMENT_KEY}
    if isinstance(value, list):
        return [strip_measurements(v) for v in value]
    return value


class ReportDiff(_Model):
    differing_files: list[str]  # artifacts whose sha256 or size differ, or that exist on one side only
    differing_fields: list[str]  # dotted paths into the deterministic report content

    @property
    def identical(self) -> bool:
        return not self.differing_files and not self.differing_fields


def diff_reports(a: ConversionReport, b: ConversionReport) -> ReportDiff:
    """Which artifacts and which deterministic report fields differ between two conversions."""
    files = sorted(
        path for path in set(a.artifacts) | set(b.artifacts) if a.artifacts.get(path) != b.artifacts.get(path)
    )
    fields: list[str] = []
    _diff_values(a.deterministic_content(), b.deterministic_content(), "", fields)
    return ReportDiff(differing_files=files, differing_fields=fields)


def _diff_values(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _diff_values(a.get(key), b.get(key), f"{path}.{key}" if path else str(key), out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff_values(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(path)


def dumps_report(report: ConversionReport) -> str:
    return json.dumps(report.model_dump(mode="json"), indent=2)
