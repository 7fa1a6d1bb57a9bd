"""Models, their versions and the conversion job that turns an uploaded Keras model into artifacts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fleet_server.db.base import Base, BigId, JsonDict, UTCDateTime, utcnow

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


class MlModel(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model", cascade="all, delete-orphan", passive_deletes=True
    )


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(32))
    # Directory in the artifact store holding the converter output (report.json, variants, C array).
    artifact_dir: Mapped[str | None] = mapped_column(String(512), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # 0006 (catalog). Directory (relative to the artifact store) holding the uploaded inputs; None for
    # versions registered from an already converted directory.
    upload_dir: Mapped[str | None] = mapped_column(String(512), default=None)
    # Conversion options as uploaded (fleet_server.catalog.options.ConversionOptions, JSON).
    options: Mapped[dict[str, Any] | None] = mapped_column(JsonDict, default=None)
    # Small digest of report.json (accuracy per variant, sizes, hardware fit) for list views.
    summary: Mapped[dict[str, Any] | None] = mapped_column(JsonDict, default=None)
    created_by: Mapped[str | None] = mapped_column(String(128), default=None)

    model: Mapped[MlModel] = relationship(back_populates="versions")
    jobs: Mapped[list[ConversionJob]] = relationship(
        back_populates="model_version", cascade="all, delete-orphan", passive_deletes=True
    )


class ConversionJob(Base):
    """One run of ``converters`` for a model version; retries are new rows."""

    __tablename__ = "conversion_jobs"
    __table_args__ = (
        CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="state_known"
        ),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress_fraction"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(64), default="")
    report_path: Mapped[str | None] = mapped_column(String(512), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # Id of the job in the task queue that runs it (local worker, RQ or Celery).
    queue_job_id: Mapped[str | None] = mapped_column(String(64), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # 0006 (catalog). The worker holding a running job refreshes heartbeat_at; a stale heartbeat means
    # the worker died and the job is requeued (attempts += 1) or failed after the last attempt.
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    worker: Mapped[str | None] = mapped_column(String(128), default=None)
    queue: Mapped[str | None] = mapped_column(String(16), default=None)  # "local" or "rq"
    retry_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("conversion_jobs.id", ondelete="SET NULL"), default=None
    )
    created_by: Mapped[str | None] = mapped_column(String(128), default=None)

    model_version: Mapped[ModelVersion] = relationship(back_populates="jobs")
