"""/api/v1/models (models, versions, uploads) and /api/v1/jobs (conversion jobs).

Uploading a version stores the files and queues a conversion job (202); a worker process (local
mode) or an RQ worker (rq mode) runs it. The whole multipart body is bounded by
``model_upload_max_bytes`` while it arrives (413 before the rest is read): the API's body-limit
middleware (fleet_server/api/body_limit.py) applies that setting to ``/api/v1/models/*/versions``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, File, Form, Path, Query, Request, UploadFile
from sqlalchemy.orm import Session

from fleet_server.api.deps import Operator, SessionDep, SettingsDep, Viewer, check_limit, set_audit
from fleet_server.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse, service_error
from fleet_server.api.schemas.common import MAX_INT_ID, Page, PageQuery
from fleet_server.api.schemas.models import (
    ArtifactOut,
    JobListQuery,
    JobOut,
    ModelCreate,
    ModelOut,
    VersionDetail,
    VersionOut,
    VersionSubmitted,
)
from fleet_server.catalog import service
from fleet_server.catalog.errors import CatalogError
from fleet_server.catalog.names import MODEL_NAME_PATTERN, VERSION_PATTERN
from fleet_server.db.ml_models import ConversionJob, MlModel, ModelVersion


@asynccontextmanager
async def _local_worker(app: FastAPI) -> AsyncIterator[None]:
    """With job_worker_autostart (job_queue=local) the server runs one worker child process."""
    settings = app.state.settings
    process = None
    if settings.job_worker_autostart and settings.job_queue == "local":
        from fleet_server.catalog.local_process import WorkerProcess

        process = WorkerProcess(settings).start()
    try:
        yield
    finally:
        if process is not None:
            process.stop()


router = APIRouter(tags=["models"], responses=ERROR_RESPONSES, lifespan=_local_worker)
ModelNamePath = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="Model name")]
VersionPath = Annotated[str, Path(pattern=VERSION_PATTERN, description="Version")]
JobIdPath = Annotated[int, Path(ge=1, le=MAX_INT_ID)]
_NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such model, version or job"}}
_CONFLICT = {409: {"model": ErrorResponse, "description": "Already exists / not allowed in this state"}}


def _job_out(job: ConversionJob) -> JobOut:
    version = job.model_version
    return JobOut(
        id=job.id,
        model=version.model.name,
        version=version.version,
        state=job.state,  # type: ignore[arg-type]
        progress=job.progress,
        stage=job.stage,
        error=job.error,
        attempts=job.attempts,
        queue=job.queue,
        queue_job_id=job.queue_job_id,
        worker=job.worker,
        retry_of_id=job.retry_of_id,
        created_by=job.created_by,
        created_at=job.created_at,
        started_at=job.started_at,
        heartbeat_at=job.heartbeat_at,
        finished_at=job.finished_at,
        report_path=job.report_path,
        report=version.summary if job.state == "succeeded" else None,
    )


def _version_out(
    session: Session, version: ModelVersion, job: ConversionJob | None = None, *, latest: bool = True
) -> VersionOut:
    """``latest``: look the newest job up here; list pages pass the one they fetched in bulk instead."""
    if latest and job is None:
        job = service.latest_job(session, version)
    return VersionOut(
        id=version.id,
        model=version.model.name,
        version=version.version,
        status=service.version_status(version, job),  # type: ignore[arg-type]
        created_at=version.created_at,
        created_by=version.created_by,
        artifact_dir=version.artifact_dir,
        options=version.options,
        summary=version.summary,
        job=_job_out(job) if job is not None else None,
    )


def _model_out(model: MlModel, count: int) -> ModelOut:
    return ModelOut(
        id=model.id,
        name=model.name,
        description=model.description,
        created_at=model.created_at,
        version_count=count,
    )


# --- models -------------------------------------------------------------------------------------------


@router.post("/api/v1/models", status_code=201, response_model=ModelOut, responses=_CONFLICT)
def create_model(body: ModelCreate, request: Request, session: SessionDep, caller: Operator) -> ModelOut:
    set_audit(request, "model.create", body.name)
    try:
        model = service.create_model(session, body.name, body.description)
    except CatalogError as exc:
        raise service_error(exc) from None
    session.commit()
    return _model_out(model, 0)


@router.get("/api/v1/models", response_model=Page[ModelOut])
def list_models(
    query: Annotated[PageQuery, Query()], session: SessionDep, settings: SettingsDep, caller: Viewer
) -> Page[ModelOut]:
    """Models ordered by name."""
    limit = check_limit(query.limit, settings)
    rows, total = service.list_models(session, limit=limit, offset=query.offset)
    counts = service.version_counts(session, [m.id for m in rows])
    return Page[ModelOut].build(
        [_model_out(m, counts.get(m.id, 0)) for m in rows], total=total, limit=limit, offset=query.offset
    )


@router.get("/api/v1/models/{model_name}", response_model=ModelOut, responses=_NOT_FOUND)
def get_model(model_name: ModelNamePath, session: SessionDep, caller: Viewer) -> ModelOut:
    try:
        model = service.get_model(session, model_name)
    except CatalogError as exc:
        raise service_error(exc) from None
    return _model_out(model, service.version_counts(session, [model.id]).get(model.id, 0))


# --- versions -----------------------------------------------------------------------------------------


@router.post(
    "/api/v1/models/{model_name}/versions",
    status_code=202,
    response_model=VersionSubmitted,
    responses={
        **_NOT_FOUND,
        **_CONFLICT,
        413: {"model": ErrorResponse, "description": "Upload larger than model_upload_max_bytes"},
        503: {"model": ErrorResponse, "description": "Job queue (Redis) unavailable; nothing stored"},
    },
)
def upload_version(
    model_name: ModelNamePath,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: Operator,
    version: Annotated[str, Form(pattern=VERSION_PATTERN, description="New version, e.g. 1.2.0")],
    model: Annotated[UploadFile, File(description="Keras model (.keras)")],
    calibration: Annotated[UploadFile, File(description="Representative inputs: .npy, or .npz key 'x'")],
    evaluation: Annotated[UploadFile, File(description="Evaluation .npz with arrays 'x' and 'y'")],
    options: Annotated[
        str,
        Form(
            max_length=65536,
            description='JSON: {"task": {"class_names": [...], "positive_class_ids": [...]}, '
            '"max_accuracy_drop_pp": 1.0, "seed": 0, "profiles": [...], "variants": [...]}',
        ),
    ] = "{}",
) -> VersionSubmitted:
    """Store the files as a new version and queue its conversion (202 with the job to poll)."""
    set_audit(request, "model.version.upload", f"{model_name}/{version}")
    try:
        parsed = json.loads(options)
    except ValueError as exc:
        raise ApiError(422, "invalid_upload", f"options is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ApiError(422, "invalid_upload", "options must be a JSON object")
    files = service.UploadFiles(model=model.file, calibration=calibration.file, evaluation=evaluation.file)
    try:
        job = service.submit_version(session, settings, model_name, version, files, parsed, actor=caller.name)
    except CatalogError as exc:
        raise service_error(exc) from None
    row = service.get_version(session, model_name, version)
    return VersionSubmitted(version=_version_out(session, row), job=_job_out(job))


@router.get("/api/v1/models/{model_name}/versions", response_model=Page[VersionOut], responses=_NOT_FOUND)
def list_versions(
    model_name: ModelNamePath,
    query: Annotated[PageQuery, Query()],
    session: SessionDep,
    settings: SettingsDep,
    caller: Viewer,
) -> Page[VersionOut]:
    """Versions of a model, oldest first, each with its latest job."""
    limit = check_limit(query.limit, settings)
    try:
        rows, total = service.list_versions(session, model_name, limit=limit, offset=query.offset)
    except CatalogError as exc:
        raise service_error(exc) from None
    jobs = service.latest_jobs(session, [v.id for v in rows])
    return Page[VersionOut].build(
        [_version_out(session, v, jobs.get(v.id), latest=False) for v in rows],
        total=total,
        limit=limit,
        offset=query.offset,
    )


@router.get(
    "/api/v1/models/{model_name}/versions/{version}", response_model=VersionDetail, responses=_NOT_FOUND
)
def get_version(
    model_name: ModelNamePath,
    version: VersionPath,
    session: SessionDep,
    settings: SettingsDep,
    caller: Viewer,
) -> VersionDetail:
    """One version: status, report summary, artifact list (when converted) and the latest job."""
    try:
        row = service.get_version(session, model_name, version)
        artifacts = []
        if row.artifact_dir is not None:
            report = service.read_report(settings, row)
            artifacts = [
                ArtifactOut(path=path, bytes=a["bytes"], sha256=a["sha256"])
                for path, a in sorted(report.get("artifacts", {}).items())
            ]
    except CatalogError as exc:
        raise service_error(exc) from None
    return VersionDetail(**_version_out(session, row).model_dump(), artifacts=artifacts)


@router.get(
    "/api/v1/models/{model_name}/versions/{version}/report",
    response_model=dict[str, Any],
    responses=_NOT_FOUND,
)
def get_version_report(
    model_name: ModelNamePath,
    version: VersionPath,
    session: SessionDep,
    settings: SettingsDep,
    caller: Viewer,
) -> dict[str, Any]:
    """The full conversion report (report.json; schema in docs/converter-report.md)."""
    try:
        return service.read_report(settings, service.get_version(session, model_name, version))
    except CatalogError as exc:
        raise service_error(exc) from None


# --- jobs ---------------------------------------------------------------------------------------------


@router.get("/api/v1/jobs", response_model=Page[JobOut])
def list_jobs(
    query: Annotated[JobListQuery, Query()], session: SessionDep, settings: SettingsDep, caller: Viewer
) -> Page[JobOut]:
    """Conversion jobs, newest first; filter by state."""
    limit = check_limit(query.limit, settings)
    rows, total = service.list_jobs(session, state=query.state, limit=limit, offset=query.offset)
    return Page[JobOut].build([_job_out(j) for j in rows], total=total, limit=limit, offset=query.offset)


@router.get("/api/v1/jobs/{job_id}", response_model=JobOut, responses=_NOT_FOUND)
def get_job(job_id: JobIdPath, session: SessionDep, caller: Viewer) -> JobOut:
    try:
        return _job_out(service.get_job(session, job_id))
    except CatalogError as exc:
        raise service_error(exc) from None


@router.post(
    "/api/v1/jobs/{job_id}/retry",
    status_code=202,
    response_model=JobOut,
    responses={**_NOT_FOUND, **_CONFLICT, 503: {"model": ErrorResponse}},
)
def retry_job(
    job_id: JobIdPath, request: Request, session: SessionDep, settings: SettingsDep, caller: Operator
) -> JobOut:
    """Queue a new job for the version of a failed job (the failed job stays as it was)."""
    set_audit(request, "job.retry", str(job_id))
    try:
        job = service.retry_job(session, settings, job_id, actor=caller.name)
    except CatalogError as exc:
        session.rollback()
        raise service_error(exc) from None
    return _job_out(job)
