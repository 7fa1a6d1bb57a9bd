"""Health check of a model on *this* device's runtime, run after an OTA install and before commit.

Checks, in order (a failure stops the check and is the result's ``reason``):

1. ``fits``: the converter's measured memory (TFLM arena + I/O, or LiteRT tensors + model) is within the
   hardware class's budget — decided before any interpreter exists (TFLM crashes on a short arena);
2. ``loads``: the interpreter parses and allocates the model;
3. ``golden``: every golden input (golden.npz, written by the converter) run through the device's own
   input path (``input_transform`` then quantization inside the runtime) gives outputs within the
   report's tolerance of the float model's outputs, and top-1 agreement is no worse than the converter
   measured. A preprocessing difference between training and serving shows up here;
4. ``latency``: the median on-device invoke time (host time x ``host_slowdown``) is within budget.
"""

from __future__ import annotations

import statistics
import zipfile
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict

from device_agent.model_manager import LoadedModel, ModelArtifact, load_runtime
from device_agent.runtime.base import InvokeError, ModelDoesNotFit, ModelLoadError
from firmware_stubs.hardware_profiles import HardwareProfile

CheckName = str  # "fits" | "loads" | "golden" | "latency"


class CheckOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: CheckName
    passed: bool
    detail: str


class HealthCheckResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str  # name@version/variant
    passed: bool
    failed_check: CheckName | None = None
    reason: str | None = None
    checks: list[CheckOutcome]
    max_abs_error: float | None = None
    tolerance: float | None = None
    top1_agreement: float | None = None
    device_latency_us: float | None = None  # median, on-device equivalent


def _fail(
    artifact: ModelArtifact, checks: list[CheckOutcome], name: str, detail: str, **figures: float | None
) -> HealthCheckResult:
    checks.append(CheckOutcome(name=name, passed=False, detail=detail))
    return HealthCheckResult(
        model=_label(artifact),
        passed=False,
        failed_check=name,
        reason=f"{name}: {detail}",
        checks=checks,
        **figures,
    )


def _label(artifact: ModelArtifact) -> str:
    return f"{artifact.name}@{artifact.version}/{artifact.variant}"


def _read_golden(artifact: ModelArtifact) -> tuple[np.ndarray, np.ndarray]:
    if artifact.golden_path is None:
        raise ValueError("the artifact has no golden.npz")
    try:
        with np.load(artifact.golden_path, allow_pickle=False) as npz:
            inputs = np.asarray(npz["inputs"], dtype=np.float32)
            expected = np.asarray(npz["float_outputs"], dtype=np.float32)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{artifact.golden_path}: unreadable golden file ({exc})") from exc
    if inputs.ndim < 2 or expected.ndim != 2 or len(inputs) != len(expected) or len(inputs) == 0:
        raise ValueError(
            f"{artifact.golden_path}: inputs {inputs.shape} and float_outputs {expected.shape} do not pair up"
        )
    return inputs, expected


def tolerance_for(artifact: ModelArtifact, profile: HardwareProfile) -> float:
    """The report's tolerance for the variant; on TFLM plus its measured int8 difference to LiteRT."""
    tol = artifact.report.golden.tolerances.get(artifact.variant)
    if tol is None:
        raise ValueError(f"report has no golden tolerance for {artifact.variant}")
    extra = 0.0
    tflm = artifact.report.tflm
    scale = artifact.report.variants[artifact.variant].output.quantization.scale
    if profile.runtime == "tflm" and tflm is not None and tflm.max_abs_diff_vs_litert_int8 and scale:
        extra = tflm.max_abs_diff_vs_litert_int8 * scale
    return tol.tolerance + extra


def run_health_check(
    artifact: ModelArtifact,
    profile: HardwareProfile,
    *,
    max_latency_us: float | None = None,
    input_transform: Callable[[np.ndarray], np.ndarray] | None = None,
    loaded: LoadedModel | None = None,
) -> HealthCheckResult:
    """Check ``artifact`` on ``profile``'s runtime (loading it unless ``loaded`` is given). Never raises
    for a bad model: the result says what failed."""
    checks: list[CheckOutcome] = []
    if loaded is None:
        try:
            loaded = LoadedModel(artifact, load_runtime(artifact, profile), None)
        except ModelDoesNotFit as exc:
            return _fail(artifact, checks, "fits", str(exc))
        except ModelLoadError as exc:
            checks.append(CheckOutcome(name="fits", passed=True, detail="within budget"))
            return _fail(artifact, checks, "loads", str(exc))
    checks.append(CheckOutcome(name="fits", passed=True, detail="within budget"))
    checks.append(CheckOutcome(name="loads", passed=True, detail=f"{loaded.runtime.name} loaded"))

    try:
        inputs, expected = _read_golden(artifact)
        tolerance = tolerance_for(artifact, profile)
        reference_top1 = artifact.report.golden.tolerances[artifact.variant].top1_agreement
    except ValueError as exc:
        return _fail(artifact, checks, "golden", str(exc))
    outputs, times = [], []
    try:
        for x in inputs:
            inv = loaded.invoke(input_transform(x) if input_transform is not None else x)
            outputs.append(inv.scores)
            times.append(inv.invoke_us)
    except InvokeError as exc:
        return _fail(artifact, checks, "golden", str(exc))
    out = np.stack(outputs)
    if out.shape != expected.shape:
        return _fail(artifact, checks, "golden", f"outputs {out.shape} but golden expects {expected.shape}")
    finite = bool(np.isfinite(out).all())
    err = float(np.abs(out - expected).max()) if finite else None
    top1 = float((out.argmax(1) == expected.argmax(1)).mean())
    figures: dict[str, float | None] = {"max_abs_error": err, "tolerance": tolerance, "top1_agreement": top1}
    if err is None:
        return _fail(artifact, checks, "golden", "non-finite outputs on golden inputs", **figures)
    if err > tolerance:
        return _fail(
            artifact,
            checks,
            "golden",
            f"max abs error {err:.4g} > tolerance {tolerance:.4g} on {len(inputs)} golden inputs "
            "(preprocessing or runtime differs from the converter's)",
            **figures,
        )
    if top1 + 1e-9 < reference_top1:
        return _fail(
            artifact,
            checks,
            "golden",
            f"top-1 agreement {top1:.3f} below the converter's {reference_top1:.3f}",
            **figures,
        )
    checks.append(
        CheckOutcome(
            name="golden", passed=True, detail=f"max abs error {err:.4g} <= {tolerance:.4g}, top-1 {top1:.3f}"
        )
    )

    device_us = statistics.median(times) * profile.host_slowdown
    figures["device_latency_us"] = device_us
    if max_latency_us is not None and device_us > max_latency_us:
        return _fail(
            artifact,
            checks,
            "latency",
            f"median {device_us:.0f} us on {profile.name} > budget {max_latency_us:.0f} us",
            **figures,
        )
    checks.append(
        CheckOutcome(name="latency", passed=True, detail=f"median {device_us:.0f} us on {profile.name}")
    )
    return HealthCheckResult(model=_label(artifact), passed=True, checks=checks, **figures)
