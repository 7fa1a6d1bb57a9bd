"""Catalog operations used by the API routes, the CLI, the demo and other packages' tests.

Rules: nothing is stored for a refused request (no row, no directory); files are written to a hidden
staging directory and moved into place only while the new row is held, then committed. Functions that
move files (``submit_version``, ``register_converted_version``, ``retry_job``) commit themselves, as
the file move and the commit must happen in that order; the others flush only (the caller commits).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from fleet_server.catalog import storage
from fleet_server.catalog.errors import (
    CatalogError,
    InvalidConvertedDir,
    InvalidName,
    InvalidUpload,
    JobNotFound,
    JobNotRetryable,
    ModelExists,
    ModelNotFound,
    QueueUnavailable,
    UploadTooLarge,
    VersionExists,
    VersionNotFound,
)
from fleet_server.catalog.names import check_model_name, check_version
from fleet_server.catalog.options import ConversionOptions
from fleet_server.catalog.upload_checks import check_upload
from fleet_server.db.base import utcnow
from fleet_server.db.ml_models import ConversionJob, MlModel, ModelVersion
from fleet_server.settings import Settings

_COPY_CHUNK = 1024 * 1024
ACTIVE_STATES = ("queued", "running")


@dataclass(frozen=True)
class UploadFiles:
    """The three uploaded files: open binary streams (e.g. UploadFile.file) or paths."""

    model: BinaryIO | Path
    calibration: BinaryIO | Path
    evaluation: BinaryIO | Path


def _names(model_name: str, version: str | None = None) -> None:
    try:
        check_model_name(model_name)
        if version is not None:
            check_version(version)
    except ValueError as exc:
        raise InvalidName(str(exc)) from None


# --- models -------------------------------------------------------------------------------------------


def create_model(session: Session, name: str, description: str = "") -> MlModel:
    """Add a model (flushes; the caller commits). Raises ModelExists, InvalidName."""
    _names(name)
    if session.scalar(select(MlModel.id).where(MlModel.name == name)) is not None:
        raise ModelExists(f"model {name!r} already exists")
    model = MlModel(name=name, description=description)
    session.add(model)
    try:
        session.flush()
    except IntegrityError:  # created concurrently between the check and the flush
        session.rollback()
        raise ModelExists(f"model {name!r} already exists") from None
    return model


def get_model(session: Session, name: str) -> MlModel:
    model = session.scalar(select(MlModel).where(MlModel.name == name))
    if model is None:
        raise ModelNotFound(f"no model named {name!r}")
    return model


def list_models(session: Session, *, limit: int, offset: int) -> tuple[Sequence[MlModel], int]:
    total = session.scalar(select(func.count()).select_from(MlModel)) or 0
    rows = session.scalars(select(MlModel).order_by(MlModel.name).limit(limit).offset(offset)).all()
    return rows, total


def version_counts(session: Session, model_ids: Sequence[int]) -> dict[int, int]:
    if not model_ids:
        return {}
    rows = session.execute(
        select(ModelVersion.model_id, func.count())
        .where(ModelVersion.model_id.in_(model_ids))
        .group_by(ModelVersion.model_id)
    ).all()
    return {model_id: count for model_id, count in rows}


# --- versions -----------------------------------------------------------------------------------------


def get_version(session: Session, model_name: str, version: str) -> ModelVersion:
    row = session.scalar(
        select(ModelVersion).join(MlModel).where(MlModel.name == model_name, ModelVersion.version == version)
    )
    if row is None:
        get_model(session, model_name)  # 404 for the model first when that is what is missing
        raise VersionNotFound(f"model {model_name!r} has no version {version!r}")
    return row


def list_versions(
    session: Session, model_name: str, *, limit: int, offset: int
) -> tuple[Sequence[ModelVersion], int]:
    model = get_model(session, model_name)
    total = session.scalar(select(func.count()).where(ModelVersion.model_id == model.id)) or 0
    rows = session.scalars(
        select(ModelVersion)
        .options(selectinload(ModelVersion.model))
        .where(ModelVersion.model_id == model.id)
        .order_by(ModelVersion.created_at, ModelVersion.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, total


def latest_jobs(session: Session, version_ids: Sequence[int]) -> dict[int, ConversionJob]:
    """The newest job of each version, in one query (list pages)."""
    if not version_ids:
        return {}
    newest = (
        select(func.max(ConversionJob.id))
        .where(ConversionJob.model_version_id.in_(version_ids))
        .group_by(ConversionJob.model_version_id)
    )
    rows = session.scalars(select(ConversionJob).where(ConversionJob.id.in_(newest))).all()
    return {job.model_version_id: job for job in rows}


def latest_job(session: Session, version: ModelVersion) -> ConversionJob | None:
    return session.scalar(
        select(ConversionJob)
        .where(ConversionJob.model_version_id == version.id)
        .order_by(ConversionJob.id.desc())
        .limit(1)
    )


def version_status(version: ModelVersion, job: ConversionJob | None) -> str:
    """ready (artifacts registered) or the latest job's state (queued, running, failed, cancelled)."""
    if version.artifact_dir is not None:
        return "ready"
    return job.state if job is not None else "failed"


def read_report(settings: Settings, version: ModelVersion) -> dict[str, Any]:
    """report.json of a ready version as a dict (no TensorFlow, no re-validation)."""
    import json

    if version.artifact_dir is None:
        raise VersionNotFound(f"version {version.version!r} has no converted artifacts yet")
    path = storage.resolve(settings, version.artifact_dir) / "report.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError) as exc:
        raise VersionNotFound(f"report of version {version.version!r} is unreadable: {exc}") from None


def _copy_limited(source: BinaryIO | Path, target: Path, budget: int, field: str) -> int:
    """Copy ``source`` to ``target``; raise UploadTooLarge as soon as ``budget`` bytes are exceeded."""
    written = 0
    stream: BinaryIO = source.open("rb") if isinstance(source, Path) else source
    try:
        with target.open("wb") as out:
            while chunk := stream.read(_COPY_CHUNK):
                written += len(chunk)
                if written > budget:
                    raise UploadTooLarge(f"upload exceeds the limit while reading {field!r}")
                out.write(chunk)
    finally:
        if isinstance(source, Path):
            stream.close()
    if written == 0:
        raise InvalidUpload(f"{field} file is empty")
    return written


def _parse_options(options: ConversionOptions | dict[str, Any] | None) -> ConversionOptions:
    if isinstance(options, ConversionOptions):
        return options
    try:
        return ConversionOptions.model_validate(options or {})
    except ValidationError as exc:
        details = [
            {"loc": ".".join(str(p) for p in e["loc"]) or "options", "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_input=False, include_context=False)
        ]
        first = details[0]
        raise InvalidUpload(f"invalid options: {first['loc']}: {first['msg']}", details) from None


def submit_version(
    session: Session,
    settings: Settings,
    model_name: str,
    version: str,
    files: UploadFiles,
    options: ConversionOptions | dict[str, Any] | None = None,
    *,
    actor: str | None = None,
) -> ConversionJob:
    """Store an upload as a new version with a queued conversion job, and hand the job to the queue.

    Refusals (nothing stored): InvalidName, ModelNotFound, VersionExists, InvalidUpload (options or
    files fail the cheap checks), UploadTooLarge, QueueUnavailable (job_queue=rq and Redis is down).
    Commits. With job_queue=rq a failure to enqueue after the commit leaves the job failed (retryable).
    """
    _names(model_name, version)
    parsed = _parse_options(options)
    model = get_model(session, model_name)
    if session.scalar(
        select(ModelVersion.id).where(ModelVersion.model_id == model.id, ModelVersion.version == version)
    ):
        raise VersionExists(f"model {model_name!r} already has a version {version!r}")
    if settings.job_queue == "rq":
        from fleet_server.catalog import rq_queue

        rq_queue.check_reachable(settings)
    staging = storage.new_staging_dir(settings, model_name)
    try:
        budget = settings.model_upload_max_bytes
        for field, source, name in (
            ("model", files.model, storage.MODEL_FILE),
            ("calibration", files.calibration, storage.CALIBRATION_FILE),
            ("evaluation", files.evaluation, storage.EVALUATION_FILE),
        ):
            budget -= _copy_limited(source, staging / name, budget, field)
        classes = len(parsed.task.class_names) if parsed.task else None
        check_upload(
            staging / storage.MODEL_FILE,
            staging / storage.CALIBRATION_FILE,
            staging / storage.EVALUATION_FILE,
            classes,
        )
        row = ModelVersion(
            model_id=model.id,
            version=version,
            upload_dir=storage.upload_rel(model_name, version),
            options=parsed.model_dump(mode="json"),
            created_by=actor,
        )
        job = ConversionJob(
            model_version=row, state="queued", stage="queued", queue=settings.job_queue, created_by=actor
        )
        session.add_all([row, job])
        _commit_version(session, settings, model_name, version, staging, storage.UPLOAD_DIR)
    except BaseException:
        storage.discard_staging(settings, staging)
        session.rollback()
        raise
    _dispatch(session, settings, job)
    return job


def _commit_version(
    session: Session, settings: Settings, model_name: str, version: str, source: Path, subdir: str
) -> None:
    """Flush the new version's rows (a taken version is VersionExists), move ``source`` into its version
    directory as ``subdir``, commit; a failed commit takes the placed directory away again."""
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise VersionExists(f"model {model_name!r} already has a version {version!r}") from None
    version_dir = storage.resolve(settings, storage.version_rel(model_name, version))
    storage.place_version_dir(source, version_dir, subdir)
    try:
        session.commit()
    except BaseException:
        session.rollback()
        storage.remove_tree(version_dir)
        raise


def _dispatch(session: Session, settings: Settings, job: ConversionJob) -> None:
    """Hand a committed, queued job to RQ (the local worker finds it in the table by itself)."""
    if job.queue != "rq":
        return
    from fleet_server.catalog import rq_queue

    try:
        job.queue_job_id = rq_queue.enqueue(settings, job.id, job.attempts)
    except QueueUnavailable as exc:
        job.state, job.error, job.finished_at = "failed", str(exc), utcnow()
    session.commit()


def get_job(session: Session, job_id: int) -> ConversionJob:
    job = session.get(ConversionJob, job_id)
    if job is None:
        raise JobNotFound(f"no conversion job {job_id}")
    return job


def list_jobs(
    session: Session, *, state: str | None, limit: int, offset: int
) -> tuple[Sequence[ConversionJob], int]:
    where = [ConversionJob.state == state] if state else []
    total = session.scalar(select(func.count()).select_from(ConversionJob).where(*where)) or 0
    rows = session.scalars(
        select(ConversionJob)
        .options(selectinload(ConversionJob.model_version).selectinload(ModelVersion.model))
        .where(*where)
        .order_by(ConversionJob.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return rows, total


def retry_job(
    session: Session, settings: Settings, job_id: int, *, actor: str | None = None
) -> ConversionJob:
    """A new queued job for the version of failed job ``job_id`` (which must be its version's latest)."""
    old = get_job(session, job_id)
    version = session.scalar(
        select(ModelVersion).where(ModelVersion.id == old.model_version_id).with_for_update()
    )
    assert version is not None
    newest = latest_job(session, version)
    if version.artifact_dir is not None:
        raise JobNotRetryable(f"version {version.version!r} is already converted")
    if version.upload_dir is None:
        raise JobNotRetryable(f"version {version.version!r} has no uploaded inputs to convert")
    if old.state != "failed" and old.state != "cancelled":
        raise JobNotRetryable(f"job {job_id} is {old.state}; only a failed or cancelled job can be retried")
    if newest is not None and newest.id != old.id:
        raise JobNotRetryable(f"job {job_id} was already retried as job {newest.id}")
    if settings.job_queue == "rq":
        from fleet_server.catalog import rq_queue

        rq_queue.check_reachable(settings)
    job = ConversionJob(
        model_version_id=version.id,
        state="queued",
        stage="queued",
        queue=settings.job_queue,
        retry_of_id=old.id,
        created_by=actor,
    )
    session.add(job)
    session.commit()
    _dispatch(session, settings, job)
    return job


# --- registering an already converted directory -----------------------------------------------------


def _verified_report(output_dir: Path) -> Any:
    from converters.report import ConversionReport

    if not output_dir.is_dir():
        raise InvalidConvertedDir(f"{output_dir} is not a directory")
    try:
        report = ConversionReport.read(output_dir)
    except (OSError, ValueError) as exc:
        raise InvalidConvertedDir(f"{output_dir} has no valid report.json: {exc}") from None
    for rel, artifact in report.artifacts.items():
        path = (output_dir / rel).resolve()
        if output_dir.resolve() not in path.parents:
            raise InvalidConvertedDir(f"report.json lists {rel!r} outside the directory")
        if not path.is_file():
            raise InvalidConvertedDir(f"{output_dir} lacks {rel} listed in report.json")
        data = path.read_bytes()
        if len(data) != artifact.bytes or hashlib.sha256(data).hexdigest() != artifact.sha256:
            raise InvalidConvertedDir(f"{output_dir}/{rel} does not match its size/sha256 in report.json")
    return report


def register_converted_version(
    session: Session,
    settings: Settings,
    model_name: str,
    version: str,
    output_dir: str | Path,
    *,
    actor: str | None = None,
    description: str = "",
) -> ModelVersion:
    """Register a directory ``convert_model`` already wrote (e.g. a reference chain entry) as a version.

    The report's artifacts are checked (size, sha256) and the directory is copied into the artifact
    store; no conversion runs. The model is created when missing (with ``description``). Commits.
    Raises InvalidName, VersionExists, InvalidConvertedDir.
    """
    from fleet_server.catalog.summary import report_summary

    _names(model_name, version)
    source = Path(output_dir)
    report = _verified_report(source)
    model = session.scalar(select(MlModel).where(MlModel.name == model_name))
    if model is None:
        model = create_model(session, model_name, description)
    if session.scalar(
        select(ModelVersion.id).where(ModelVersion.model_id == model.id, ModelVersion.version == version)
    ):
        session.rollback()
        raise VersionExists(f"model {model_name!r} already has a version {version!r}")
    staging = storage.new_staging_dir(settings, model_name)
    try:
        copied = staging / storage.CONVERTED_DIR
        shutil.copytree(source, copied, symlinks=False)
        row = ModelVersion(
            model_id=model.id,
            version=version,
            artifact_dir=storage.converted_rel(model_name, version),
            summary=report_summary(report),
            created_by=actor,
        )
        session.add(row)
        _commit_version(session, settings, model_name, version, copied, storage.CONVERTED_DIR)
    except CatalogError:
        storage.discard_staging(settings, staging)
        raise
    except BaseException:
        storage.discard_staging(settings, staging)
        session.rollback()
        raise
    storage.remove_tree(staging)
    return row
