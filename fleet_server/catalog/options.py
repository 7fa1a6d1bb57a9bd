"""The conversion options an upload carries (the ``options`` JSON): what the task means and the knobs.

Validated when the upload arrives (bad options are refused before anything is stored) by building the
converter's own ``ConversionConfig`` / ``TaskInfo`` from them, so the job cannot fail on them later.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from converters.config import ConversionConfig, TaskInfo, VariantName

ClassName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]


class TaskOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    class_names: list[ClassName] = Field(min_length=2, max_length=1000)
    positive_class_ids: list[Annotated[int, Field(ge=0, le=999)]] = Field(
        default_factory=list, max_length=1000
    )
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)


class ConversionOptions(BaseModel):
    """Upload options; everything optional (defaults = the converter's defaults)."""

    model_config = ConfigDict(extra="forbid")

    task: TaskOptions | None = Field(default=None, description="What the outputs mean (class names).")
    max_accuracy_drop_pp: float = Field(1.0, ge=0.0, le=100.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    profiles: list[Annotated[str, StringConstraints(max_length=64)]] | None = Field(
        default=None, max_length=64, description="Hardware classes to check fit against; null = all."
    )
    variants: list[VariantName] | None = Field(default=None, max_length=4)

    @model_validator(mode="after")
    def _converter_accepts(self) -> ConversionOptions:
        # The converter's own models decide (known profiles, positive ids inside the classes, ...).
        self.to_config()
        self.to_task()
        return self

    def to_config(self) -> ConversionConfig:
        kwargs: dict[str, Any] = {
            "max_accuracy_drop_pp": self.max_accuracy_drop_pp,
            "seed": self.seed,
            "profiles": tuple(self.profiles) if self.profiles is not None else None,
            "overwrite": True,  # a re-run after a lost worker replaces its own earlier output
        }
        if self.variants is not None:
            kwargs["variants"] = tuple(self.variants)
        return ConversionConfig(**kwargs)

    def to_task(self) -> TaskInfo | None:
        if self.task is None:
            return None
        return TaskInfo(**self.task.model_dump())
