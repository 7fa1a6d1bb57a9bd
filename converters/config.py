"""What a conversion is asked to do: the knobs (ConversionConfig) and what the task means (TaskInfo)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

VariantName = Literal["float32", "float16", "dynamic_int8", "full_int8"]
ALL_VARIANTS: tuple[VariantName, ...] = ("float32", "float16", "dynamic_int8", "full_int8")


class ConversionConfig(BaseModel):
    """Settings of one conversion. Everything here is recorded in report.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_accuracy_drop_pp: float = Field(
        1.0, ge=0.0, description="a variant more than this below float is rejected"
    )
    golden_size: int = Field(
        16, ge=1, le=1024, description="samples in golden.npz for the device health check"
    )
    histogram_bins: int = Field(10, ge=2, le=64)
    max_baseline_features: int = Field(
        16, ge=1, le=64, description="input summary features the device counts"
    )
    seed: int = 0
    latency_warmup_runs: int = Field(5, ge=0)
    latency_runs: int = Field(30, ge=1)
    tflm_eval_size: int = Field(200, ge=1, description="evaluation samples run through the TFLM interpreter")
    golden_tolerance_margin: float = Field(2.0, ge=1.0, description="tolerance = measured max error x margin")
    variants: tuple[VariantName, ...] = ALL_VARIANTS
    # Hardware classes (firmware_stubs.hardware_profiles names) to check fit against; None = all of them.
    profiles: tuple[str, ...] | None = None
    # How to write, not what to build: kept out of report.json so it cannot break determinism checks.
    overwrite: bool = Field(False, exclude=True)

    @field_validator("variants")
    @classmethod
    def _variants_known_and_unique(cls, v: tuple[VariantName, ...]) -> tuple[VariantName, ...]:
        if not v:
            raise ValueError("at least one variant must be built")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate variants in {v}")
        # Keep the canonical order so reports and file lists are stable whatever order was given.
        return tuple(name for name in ALL_VARIANTS if name in v)

    @field_validator("profiles")
    @classmethod
    def _profiles_known(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return None
        from firmware_stubs.hardware_profiles import PROFILES

        unknown = [p for p in v if p not in PROFILES]
        if unknown:
            raise ValueError(f"unknown hardware profiles {unknown}; known: {sorted(PROFILES)}")
        if not v:
            raise ValueError("profiles must not be empty (use None for all)")
        return v


class TaskInfo(BaseModel):
    """What the classifier's outputs mean; used for the output-score baseline and the report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    class_names: list[str]
    positive_class_ids: list[int] = []
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _positives_are_classes(self) -> TaskInfo:
        bad = [i for i in self.positive_class_ids if not 0 <= i < len(self.class_names)]
        if bad:
            raise ValueError(f"positive_class_ids {bad} outside 0..{len(self.class_names) - 1}")
        return self
