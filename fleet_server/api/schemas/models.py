"""Model catalog request/response models: models, versions, conversion jobs."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from fleet_server.api.schemas.common import PRINTABLE_PATTERN, PageQuery, StrictModel
from fleet_server.catalog.names import MODEL_NAME_PATTERN, VERSION_PATTERN

ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]
VersionName = Annotated[str, StringConstraints(pattern=VERSION_PATTERN)]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
VersionStatus = Literal["ready", "queued", "running", "failed", "cancelled"]


class ModelCreate(StrictModel):
    name: ModelName = Field(description="Unique; letters, digits, '_', '.', '-' (also a path component).")
    description: Annotated[str, StringConstraints(max_length=2000, pattern=PRINTABLE_PATTERN)] = ""


class ModelOut(BaseModel):
    id: int
    name: str
    description: str
    created_at: dt.datetime
    version_count: int


class JobListQuery(PageQuery):
    state: JobState | None = None


class JobOut(BaseModel):
    id: int
    model: str
    version: str
    state: JobState
    progress: float = Field(description="0..1")
    stage: str = Field(description="What the converter is doing now (or did last).")
    error: str | None
    attempts: int = Field(description="Claims by a worker so far (a lost worker's claim counts).")
    queue: str | None = Field(description="local or rq")
    queue_job_id: str | None
    worker: str | None
    retry_of_id: int | None
    created_by: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    finished_at: dt.datetime | None
    report_path: str | None = Field(description="report.json, relative to the artifact store.")
    report: dict[str, Any] | None = Field(description="Summary of the conversion report when succeeded.")


class ArtifactOut(BaseModel):
    path: str = Field(description="Relative to the version's artifact directory.")
    bytes: int
    sha256: str


class VersionOut(BaseModel):
    id: int
    model: str
    version: str
    status: VersionStatus = Field(description="ready, or the state of the latest conversion job.")
    created_at: dt.datetime
    created_by: str | None
    artifact_dir: str | None = Field(description="Converted artifacts, relative to the artifact store.")
    options: dict[str, Any] | None
    summary: dict[str, Any] | None = Field(description="Digest of report.json (null until converted).")
    job: JobOut | None = Field(description="The latest conversion job.")


class VersionDetail(VersionOut):
    artifacts: list[ArtifactOut]


class VersionSubmitted(BaseModel):
    version: VersionOut
    job: JobOut
