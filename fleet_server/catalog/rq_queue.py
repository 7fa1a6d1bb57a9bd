"""Scale-out mode (``job_queue=rq``): RQ on Redis carries the job id; the DB row stays the job record.

RQ workers on other machines run ``run_rq_job`` with the same settings (TINYFLEET_DATABASE_URL and an
artifact store shared with the API servers, e.g. over NFS). Start one with ``tinyfleet worker run
--queue rq`` (an RQ SimpleWorker: one process, TensorFlow stays loaded between jobs) or plain ``rq
worker -u $TINYFLEET_REDIS_URL tinyfleet-conversions`` with the TINYFLEET_* environment set.
A job whose RQ worker died stays ``running`` in the DB until its heartbeat is stale; the next job
(or any local worker) requeues it and enqueues it to RQ again.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from fleet_server.catalog.errors import QueueUnavailable
from fleet_server.db.ml_models import ConversionJob
from fleet_server.settings import Settings

JOB_FUNCTION = "fleet_server.catalog.rq_queue.run_rq_job"
log = logging.getLogger(__name__)


def _redis(settings: Settings) -> Any:
    from redis import Redis

    return Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=10)


def _where(settings: Settings) -> str:
    # The URL may carry a password: name host/port/db only.
    from urllib.parse import urlsplit

    parts = urlsplit(settings.redis_url)
    return f"redis {parts.hostname}:{parts.port or 6379}{parts.path or ''}"


def check_reachable(settings: Settings) -> None:
    from redis.exceptions import RedisError

    try:
        _redis(settings).ping()
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(
            f"job queue unavailable ({_where(settings)}: {type(exc).__name__}); nothing was stored"
        ) from None


def enqueue(settings: Settings, job_id: int, attempt: int = 0) -> str:
    """Put conversion job ``job_id`` on the RQ queue; returns the RQ job id."""
    from redis.exceptions import RedisError
    from rq import Queue

    rq_id = f"tinyfleet-conversion-{job_id}-{attempt}-{uuid.uuid4().hex[:8]}"
    try:
        queue = Queue(settings.rq_queue_name, connection=_redis(settings))
        queue.enqueue_call(
            JOB_FUNCTION,
            args=(job_id,),
            timeout=settings.job_timeout_s,
            job_id=rq_id,
            result_ttl=24 * 3600,
            failure_ttl=7 * 24 * 3600,
            description=f"tinyfleet conversion job {job_id}",
        )
    except (RedisError, OSError) as exc:
        raise QueueUnavailable(
            f"could not hand job {job_id} to RQ ({_where(settings)}: {type(exc).__name__}); retry the job"
        ) from None
    return rq_id


def enqueue_requeued(settings: Settings, factory: sessionmaker[Session], job_id: int) -> None:
    """Enqueue a job the stale-job sweep put back to ``queued``; record the RQ id."""
    try:
        rq_id = enqueue(settings, job_id)
    except QueueUnavailable as exc:
        log.error("job %s: %s", job_id, exc)
        return
    with factory() as session:
        session.execute(
            update(ConversionJob.__table__)
            .where(ConversionJob.__table__.c.id == job_id)
            .values(queue_job_id=rq_id)
        )
        session.commit()


_worker: Any = None  # one LocalWorker (engine + session factory) per RQ worker process


def run_rq_job(job_id: int) -> str:
    """The RQ job function: requeue stale jobs, claim ``job_id`` if still queued, run it.

    Returns the final state, or "skipped" when the job was not queued (already run, or cancelled)."""
    global _worker
    from fleet_server.catalog import jobs
    from fleet_server.catalog.runner import run_claimed_job
    from fleet_server.catalog.worker import LocalWorker

    if _worker is None:
        _worker = LocalWorker(Settings())
    _worker.requeue_stale()
    with _worker.factory() as session:
        claim = jobs.claim_job(session, job_id, _worker.name)
    if claim is None:
        return "skipped"
    return run_claimed_job(_worker.settings, _worker.factory, claim)


def run_rq_worker(settings: Settings, *, burst: bool = False, max_jobs: int | None = None) -> bool:
    """Run an RQ SimpleWorker on ``settings.rq_queue_name`` (blocks; ``burst``: until the queue is empty)."""
    from rq import Queue, SimpleWorker

    connection = _redis(settings)
    worker = SimpleWorker([Queue(settings.rq_queue_name, connection=connection)], connection=connection)
    return bool(worker.work(burst=burst, max_jobs=max_jobs, with_scheduler=False))
