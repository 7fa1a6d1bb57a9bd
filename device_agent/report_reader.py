"""The few fields of a converter ``report.json`` the device agent reads, without pydantic.

``converters.report.ConversionReport`` is the converter's full pydantic model; importing it costs the
running agent ~15 MB (pydantic), more than the rest of the agent. The device needs only: the variants'
file, hash, tensor RAM and output quantization; the hardware fit's default variant; the golden file and
its tolerances; the TFLM arena and int8 difference; the drift baselines; the artifact hashes; name and
version. :func:`read_device_report` parses exactly those into frozen dataclasses with the same attribute
names as the pydantic model (so ``artifact.report.baselines.feature_spec.input_shape`` reads the same),
checks each value's type explicitly and ignores every other key. A bad value raises
:class:`ReportFieldError` naming the dotted field (``variants.full_int8.sha256: must be a string``).
"""

from __future__ import annotations

import json
import typing
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Self

from firmware_stubs.typecheck import Rules, check_value


class ReportFieldError(ValueError):
    """A report.json field the device needs is missing or has the wrong type; ``loc`` is its dotted path."""

    def __init__(self, loc: str, msg: str) -> None:
        self.loc = loc
        self.msg = msg
        super().__init__(f"{loc or '(top level)'}: {msg}")


def _join(loc: str, key: object) -> str:
    return f"{loc}.{key}" if loc else str(key)


def _nested(tp: Any, v: Any, loc: str) -> Any:
    if isinstance(tp, type) and issubclass(tp, _Record):
        return tp.from_obj(v, loc)
    return NotImplemented


def _item(loc: str, key: str | int) -> str:
    return f"{loc}[{key}]" if isinstance(key, int) else _join(loc, key)


_RULES = Rules(fail=ReportFieldError, join=_item, nested=_nested)


_HINTS: dict[type, dict[str, Any]] = {}


@dataclass(frozen=True, kw_only=True)
class _Record:
    """Built from a JSON object: declared fields checked, required ones present, other keys ignored."""

    @classmethod
    def from_obj(cls, obj: Any, loc: str = "") -> Self:
        if not isinstance(obj, dict):
            raise ReportFieldError(loc, f"must be an object, got {type(obj).__name__}")
        hints = _HINTS.get(cls)
        if hints is None:
            hints = _HINTS[cls] = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in obj:
                if f.default is MISSING:
                    raise ReportFieldError(_join(loc, f.name), "field required")
                continue
            values[f.name] = check_value(hints[f.name], obj[f.name], _join(loc, f.name), _RULES)
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class QuantParams(_Record):
    scale: float | None = None  # None: tensor is not quantized
    zero_point: int | None = None


@dataclass(frozen=True, kw_only=True)
class TensorInfo(_Record):
    shape: list[int]
    dtype: str
    quantization: QuantParams = QuantParams()


@dataclass(frozen=True, kw_only=True)
class VariantRecord(_Record):
    variant: str
    file: str
    bytes: int
    sha256: str
    input: TensorInfo
    output: TensorInfo
    ram_bytes: int
    status: str


@dataclass(frozen=True, kw_only=True)
class TflmRecord(_Record):
    arena_bytes: int | None  # measured minimum arena; None when not runnable on TFLM
    io_bytes: int  # input + output tensor bytes (the application's copy buffers)
    max_abs_diff_vs_litert_int8: int | None = None


@dataclass(frozen=True, kw_only=True)
class HardwareFitRecord(_Record):
    profile: str
    runtime: str
    default_variant: str | None
    default_reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class BaselineFeatureSpec(_Record):
    input_shape: list[int]
    axis: int
    group_bounds: list[int]


@dataclass(frozen=True, kw_only=True)
class Histogram(_Record):
    name: str
    edges: list[float]
    counts: list[int]
    fractions: list[float]


@dataclass(frozen=True, kw_only=True)
class OutputScoreSpec(_Record):
    kind: str
    class_ids: list[int]
    apply_softmax: bool = False


@dataclass(frozen=True, kw_only=True)
class Baselines(_Record):
    samples: int
    feature_spec: BaselineFeatureSpec
    features: list[Histogram]
    output_score_spec: OutputScoreSpec
    output_score: Histogram


@dataclass(frozen=True, kw_only=True)
class GoldenTolerance(_Record):
    max_abs_error_measured: float | None
    tolerance: float
    top1_agreement: float


@dataclass(frozen=True, kw_only=True)
class GoldenRecord(_Record):
    file: str
    size: int
    tolerances: dict[str, GoldenTolerance]


@dataclass(frozen=True, kw_only=True)
class ArtifactRecord(_Record):
    bytes: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class DeviceReport(_Record):
    """What the agent reads of a ConversionReport (same attribute names, a subset of the fields)."""

    name: str
    version: str
    variants: dict[str, VariantRecord]
    tflm: TflmRecord | None
    hardware_fit: dict[str, HardwareFitRecord]
    baselines: Baselines
    golden: GoldenRecord
    artifacts: dict[str, ArtifactRecord]

    def __post_init__(self) -> None:
        # Cross-field rules the agent relies on: a histogram has one more edge than counts.
        b = self.baselines
        named = [(f"baselines.features[{i}]", h) for i, h in enumerate(b.features)]
        for where, h in [*named, ("baselines.output_score", b.output_score)]:
            if len(h.edges) != len(h.counts) + 1 or len(h.edges) < 2:
                raise ReportFieldError(f"{where}.edges", f"{len(h.edges)} edges for {len(h.counts)} counts")
        spec = b.feature_spec
        if not 0 <= spec.axis < len(spec.input_shape):
            raise ReportFieldError("baselines.feature_spec.axis", f"{spec.axis} outside {spec.input_shape}")


def parse_device_report(text: str | bytes) -> DeviceReport:
    """A DeviceReport from report.json text; ReportFieldError names the first bad field."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise ReportFieldError("", f"not JSON: {exc}") from None
    return DeviceReport.from_obj(obj)


def read_device_report(path: str | Path) -> DeviceReport:
    """Read and parse ``path`` (OSError when unreadable, ReportFieldError when a needed field is bad)."""
    return parse_device_report(Path(path).read_bytes())
