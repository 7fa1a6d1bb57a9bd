"""The conversion job's life in its DB row: claim, heartbeat, progress, finish, requeue after a lost worker.

The row is the job record in both queue modes. A claim is one conditional UPDATE
(``... WHERE id = :id AND state = 'queued'``): whoever changes the row owns the job, on SQLite and on
PostgreSQL alike; PostgreSQL also picks the candidate with ``FOR UPDATE SKIP LOCKED`` so that several
workers do not race for the same row. Every later write of the worker is conditional on
``worker = :me AND attempts = :n AND state = 'running'``, so a worker that was declared lost (its job
requeued and claimed by another) cannot overwrite the new owner's record.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from fleet_server.db.base import utcnow
from fleet_server.db.ml_models import ConversionJob, ModelVersion

_jobs = ConversionJob.__table__
_MAX_ERROR_CHARS = 4000
_MAX_STAGE_CHARS = 64


def worker_name() -> str:
    return f"{socket.gethostname()[:100]}:{os.getpid()}"


@dataclass(frozen=True)
class Claim:
    job_id: int
    worker: str
    attempt: int


def _owned(claim: Claim) -> object:
    return and_(
        _jobs.c.id == claim.job_id,
        _jobs.c.state == "running",
        _jobs.c.worker == claim.worker,
        _jobs.c.attempts == claim.attempt,
    )


def _try_claim(session: Session, job_id: int, worker: str) -> Claim | None:
    now = utcnow()
    result = session.execute(
        update(_jobs)
        .where(_jobs.c.id == job_id, _jobs.c.state == "queued")
        .values(
            state="running",
            attempts=_jobs.c.attempts + 1,
            started_at=now,
            heartbeat_at=now,
            worker=worker,
            stage="claimed",
            progress=0.0,
            error=None,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    attempt = session.scalar(select(_jobs.c.attempts).where(_jobs.c.id == job_id))
    session.commit()
    assert attempt is not None
    return Claim(job_id=job_id, worker=worker, attempt=attempt)


def claim_next(session: Session, worker: str, *, queue: str = "local") -> Claim | None:
    """Claim the oldest queued job of ``queue``; None when there is none."""
    for _ in range(10):  # lost races only (another worker claimed the candidate first)
        stmt = (
            select(_jobs.c.id)
            .where(_jobs.c.state == "queued", or_(_jobs.c.queue == queue, _jobs.c.queue.is_(None)))
            .order_by(_jobs.c.id)
            .limit(1)
        )
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        job_id = session.scalar(stmt)
        if job_id is None:
            session.rollback()
            return None
        claim = _try_claim(session, job_id, worker)
        if claim is not None:
            return claim
    return None


def claim_job(session: Session, job_id: int, worker: str) -> Claim | None:
    """Claim one given job (RQ hands over the id); None when it is not queued any more."""
    return _try_claim(session, job_id, worker)


def heartbeat(session: Session, claim: Claim) -> bool:
    """Refresh the heartbeat; False when the job is no longer this worker's."""
    result = session.execute(update(_jobs).where(_owned(claim)).values(heartbeat_at=utcnow()))
    session.commit()
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def report_progress(session: Session, claim: Claim, stage: str, fraction: float) -> bool:
    result = session.execute(
        update(_jobs)
        .where(_owned(claim))
        .values(stage=stage[:_MAX_STAGE_CHARS], progress=min(max(fraction, 0.0), 1.0), heartbeat_at=utcnow())
    )
    session.commit()
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def finish_succeeded(
    session: Session,
    claim: Claim,
    *,
    artifact_dir: str,
    report_path: str,
    summary: dict[str, object],
) -> bool:
    """Mark the job succeeded and point its version at the converted directory, in one transaction."""
    now = utcnow()
    result = session.execute(
        update(_jobs)
        .where(_owned(claim))
        .values(
            state="succeeded",
            progress=1.0,
            stage="done",
            report_path=report_path,
            finished_at=now,
            error=None,
        )
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    version_id = session.scalar(select(_jobs.c.model_version_id).where(_jobs.c.id == claim.job_id))
    session.execute(
        update(ModelVersion.__table__)
        .where(ModelVersion.__table__.c.id == version_id)
        .values(artifact_dir=artifact_dir, summary=summary)
    )
    session.commit()
    return True


def finish_failed(session: Session, claim: Claim, error: str) -> bool:
    result = session.execute(
        update(_jobs)
        .where(_owned(claim))
        .values(state="failed", error=error[:_MAX_ERROR_CHARS], finished_at=utcnow())
    )
    session.commit()
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


@dataclass(frozen=True)
class Requeued:
    job_id: int
    state: str  # "queued" again, or "failed" after the last attempt
    queue: str | None
    attempts: int


def requeue_stale(
    session: Session, *, stale_after_s: float, max_attempts: int, now: dt.datetime | None = None
) -> list[Requeued]:
    """Running jobs whose heartbeat is older than ``stale_after_s``: their worker died. Requeue them
    (the next claim counts the attempt) or fail them once ``max_attempts`` claims were lost. Commits."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=stale_after_s)
    stmt = select(_jobs.c.id, _jobs.c.attempts, _jobs.c.worker, _jobs.c.queue).where(
        _jobs.c.state == "running",
        or_(_jobs.c.heartbeat_at < cutoff, and_(_jobs.c.heartbeat_at.is_(None), _jobs.c.started_at < cutoff)),
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    out: list[Requeued] = []
    for job_id, attempts, worker, queue in session.execute(stmt).all():
        lost = f"worker {worker} stopped sending heartbeats (attempt {attempts} of {max_attempts})"
        if attempts >= max_attempts:
            values = {"state": "failed", "error": f"{lost}; giving up", "finished_at": now or utcnow()}
            state = "failed"
        else:
            values = {
                "state": "queued",
                "stage": "requeued after a lost worker",
                "worker": None,
                "progress": 0.0,
            }
            state = "queued"
        result = session.execute(
            update(_jobs)
            .where(_jobs.c.id == job_id, _jobs.c.state == "running", _jobs.c.attempts == attempts)
            .values(**values)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            out.append(Requeued(job_id=job_id, state=state, queue=queue, attempts=attempts))
    session.commit()
    return out
