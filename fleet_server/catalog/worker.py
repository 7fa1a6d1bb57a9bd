"""The local conversion worker: requeue jobs of dead workers, claim the oldest queued job, run it.

Runs as its own process (``tinyfleet worker run`` or ``python -m fleet_server.catalog.worker``, or
started by the API process with ``job_worker_autostart``), never as a thread of the API server:
TensorFlow must not load there. Several workers may poll the same database; the claim decides.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from fleet_server.catalog import jobs
from fleet_server.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    requeued: int = 0
    job_ids: list[int] = field(default_factory=list)


class LocalWorker:
    def __init__(self, settings: Settings, engine: Engine | None = None, name: str | None = None) -> None:
        from fleet_server.db import make_engine, make_session_factory

        self.settings = settings
        self._own_engine = engine is None
        self.engine = engine or make_engine(settings.database_url)
        self.factory: sessionmaker[Session] = make_session_factory(self.engine)
        self.name = name or jobs.worker_name()
        self.stats = WorkerStats()

    def close(self) -> None:
        if self._own_engine:
            self.engine.dispose()

    def __enter__(self) -> LocalWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def requeue_stale(self) -> list[jobs.Requeued]:
        with self.factory() as session:
            done = jobs.requeue_stale(
                session,
                stale_after_s=self.settings.job_stale_after_s,
                max_attempts=self.settings.job_max_attempts,
            )
        for item in done:
            log.warning(
                "job %s: worker lost; now %s (attempts so far %s)", item.job_id, item.state, item.attempts
            )
            if item.state == "queued" and item.queue == "rq":
                from fleet_server.catalog import rq_queue

                rq_queue.enqueue_requeued(self.settings, self.factory, item.job_id)
        self.stats.requeued += sum(1 for item in done if item.state == "queued")
        return done

    def run_one(self) -> int | None:
        """Requeue stale jobs, then claim and run one queued local job; its id, or None when idle."""
        from fleet_server.catalog.runner import run_claimed_job

        self.requeue_stale()
        with self.factory() as session:
            claim = jobs.claim_next(session, self.name, queue="local")
        if claim is None:
            return None
        log.info("job %s: claimed by %s (attempt %s)", claim.job_id, self.name, claim.attempt)
        state = run_claimed_job(self.settings, self.factory, claim)
        log.info("job %s: %s", claim.job_id, state)
        setattr(self.stats, state, getattr(self.stats, state) + 1)
        self.stats.job_ids.append(claim.job_id)
        return claim.job_id

    def run(
        self, stop: threading.Event, *, max_jobs: int | None = None, exit_when_idle: bool = False
    ) -> None:
        while not stop.is_set():
            try:
                job_id = self.run_one()
            except Exception:  # e.g. the database is briefly unreachable: keep polling (burst: give up)
                if exit_when_idle:
                    raise
                log.exception(
                    "worker %s: poll failed; retrying in %s s", self.name, self.settings.job_poll_interval_s
                )
                stop.wait(self.settings.job_poll_interval_s)
                continue
            if max_jobs is not None and len(self.stats.job_ids) >= max_jobs:
                return
            if job_id is None:
                if exit_when_idle:
                    return
                stop.wait(self.settings.job_poll_interval_s)


def run_one_job(settings: Settings) -> int | None:
    """Claim and run one queued local job (after requeueing stale ones); the job id, or None if idle."""
    with LocalWorker(settings) as worker:
        return worker.run_one()


def main(argv: list[str] | None = None) -> int:
    """``python -m fleet_server.catalog.worker [--once|--burst] [--queue local|rq]`` (settings from env)."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog="python -m fleet_server.catalog.worker")
    parser.add_argument("--queue", choices=("local", "rq"), default=None)
    parser.add_argument("--burst", action="store_true", help="exit when no job is queued")
    parser.add_argument("--max-jobs", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    queue = args.queue or settings.job_queue
    if queue == "rq":
        from fleet_server.catalog.rq_queue import run_rq_worker

        run_rq_worker(settings, burst=args.burst, max_jobs=args.max_jobs)
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with LocalWorker(settings) as worker:
        worker.run(stop, max_jobs=args.max_jobs, exit_when_idle=args.burst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
