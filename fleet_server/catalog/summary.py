"""A small digest of a conversion report for list and detail views (the full report stays on disk)."""

from __future__ import annotations

from typing import Any

from converters.report import ConversionReport


def report_summary(report: ConversionReport) -> dict[str, Any]:
    return {
        "name": report.name,
        "version": report.version,
        "input_shape": report.model.input_shape,
        "num_classes": report.model.num_classes,
        "parameters": report.model.parameters,
        "float_accuracy": report.model.float_accuracy,
        "calibration_samples": report.calibration_samples,
        "evaluation_samples": report.evaluation_samples,
        "variants": {
            name: {
                "file": v.file,
                "bytes": v.bytes,
                "accuracy": v.accuracy,
                "accuracy_delta_pp": v.accuracy_delta_pp,
                "ram_bytes": v.ram_bytes,
                "latency_steady_us": v.latency_steady_us,
                "status": v.status,
                "rejection_reason": v.rejection_reason,
            }
            for name, v in report.variants.items()
        },
        "tflm_arena_bytes": report.tflm.arena_bytes if report.tflm else None,
        "default_variants": {p: fit.default_variant for p, fit in report.hardware_fit.items()},
        "total_seconds": report.measurements.total_seconds,
    }
