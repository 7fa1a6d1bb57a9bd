"""Run one claimed conversion job: read the uploaded inputs, call ``convert_model``, record the outcome.

TensorFlow is imported here, inside the job, never at module import: the API process imports the
catalog without paying for (or risking) TensorFlow. A heartbeat thread keeps the claim fresh while a
long stage (e.g. the TFLM arena search) reports no progress.
"""

from __future__ import annotations

import threading
import traceback
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fleet_server.catalog import jobs, storage
from fleet_server.catalog.inputs import CALIBRATION_KEYS, InputFileError, load_array, load_evaluation
from fleet_server.catalog.jobs import Claim
from fleet_server.db.ml_models import ConversionJob, MlModel, ModelVersion
from fleet_server.settings import Settings


class _Heartbeat:
    def __init__(self, factory: sessionmaker[Session], claim: Claim, interval_s: float) -> None:
        self._factory, self._claim, self._interval = factory, claim, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{claim.job_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._factory() as session:
                    if not jobs.heartbeat(session, self._claim):
                        return  # no longer ours; the conversion's end will find that out too
            except Exception:  # a DB hiccup: the next beat tries again (staleness needs many misses)
                continue


def run_claimed_job(settings: Settings, factory: sessionmaker[Session], claim: Claim) -> str:
    """Convert the claimed job's version; returns the job's final state ("succeeded" / "failed"),
    or "lost" when another worker took the job over meanwhile (nothing is recorded then)."""
    with factory() as session:
        row = session.execute(
            select(ConversionJob, ModelVersion, MlModel)
            .join(ModelVersion, ConversionJob.model_version_id == ModelVersion.id)
            .join(MlModel, ModelVersion.model_id == MlModel.id)
            .where(ConversionJob.id == claim.job_id)
        ).one()
        _job, version, model = row
        model_name, version_name = model.name, version.version
        upload_dir, options = version.upload_dir, version.options
    with _Heartbeat(factory, claim, settings.job_heartbeat_interval_s):
        try:
            outcome = _convert(settings, factory, claim, model_name, version_name, upload_dir, options)
        except _JobFailed as exc:
            with factory() as session:
                return "failed" if jobs.finish_failed(session, claim, str(exc)) else "lost"
        except Exception as exc:  # a bug, not the model: keep the worker alive, say what happened
            message = f"internal error: {type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=5)
            with factory() as session:
                return "failed" if jobs.finish_failed(session, claim, message) else "lost"
    artifact_rel, summary = outcome
    with factory() as session:
        done = jobs.finish_succeeded(
            session,
            claim,
            artifact_dir=artifact_rel,
            report_path=f"{artifact_rel}/report.json",
            summary=summary,
        )
    return "succeeded" if done else "lost"


class _JobFailed(Exception):
    """The job's input or the model is at fault; the message is what the operator sees."""


def _convert(
    settings: Settings,
    factory: sessionmaker[Session],
    claim: Claim,
    model_name: str,
    version: str,
    upload_rel: str | None,
    options_json: dict[str, object] | None,
) -> tuple[str, dict[str, object]]:
    from converters.errors import ConversionError
    from fleet_server.catalog.options import ConversionOptions
    from fleet_server.catalog.summary import report_summary

    if upload_rel is None:
        raise _JobFailed("this version was registered without uploaded inputs; nothing to convert")
    upload = storage.resolve(settings, upload_rel)
    version_dir = storage.resolve(settings, storage.version_rel(model_name, version))
    options = ConversionOptions.model_validate(options_json or {})

    def progress(stage: str, fraction: float) -> None:
        with factory() as session:
            jobs.report_progress(session, claim, stage, fraction)

    progress("reading the uploaded data", 0.0)
    try:
        calibration = load_array(upload / storage.CALIBRATION_FILE, "calibration", CALIBRATION_KEYS)
        x, y = load_evaluation(upload / storage.EVALUATION_FILE)
    except InputFileError as exc:
        raise _JobFailed(str(exc).replace(str(upload) + "/", "")) from None
    model_path = upload / storage.MODEL_FILE
    if not model_path.is_file():
        raise _JobFailed("the uploaded model file is missing from the artifact store")
    storage.remove_partial_outputs(version_dir)
    progress("loading TensorFlow", 0.0)
    from converters.pipeline import convert_model

    artifact_rel = storage.converted_rel(model_name, version)
    try:
        report = convert_model(
            model_path,
            calibration,
            x,
            y,
            name=model_name,
            version=version,
            out_dir=storage.resolve(settings, artifact_rel),
            config=options.to_config(),
            task=options.to_task(),
            progress=progress,
        )
    except ConversionError as exc:
        raise _JobFailed(f"{type(exc).__name__}: {_strip(str(exc), upload)}") from None
    return artifact_rel, report_summary(report)


def _strip(message: str, upload: Path) -> str:
    # Server paths mean nothing to the operator; the upload's files have fixed names.
    return message.replace(str(upload) + "/", "")
