"""The job row as the job record, on SQLite and PostgreSQL: claims are exclusive under concurrency,
stale jobs are requeued then failed after the last attempt, and a worker that lost its job cannot
write over the new owner's record."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from fleet_server.catalog import jobs
from fleet_server.db import ConversionJob, MlModel, ModelVersion, make_engine, make_session_factory
from fleet_server.db.base import utcnow


@pytest.fixture
def factory(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def _queue(factory: sessionmaker[Session], n: int, queue: str = "local") -> list[int]:
    with factory() as s:
        model = MlModel(name="m")
        versions = [ModelVersion(model=model, version=f"1.0.{i}") for i in range(n)]
        job_rows = [ConversionJob(model_version=v, state="queued", queue=queue) for v in versions]
        s.add_all([model, *versions, *job_rows])
        s.commit()
        return [j.id for j in job_rows]


def _job(factory: sessionmaker[Session], job_id: int) -> ConversionJob:
    with factory() as s:
        job = s.get(ConversionJob, job_id)
        assert job is not None
        return job


def test_claims_oldest_first_and_only_its_queue(factory: sessionmaker[Session]) -> None:
    ids = _queue(factory, 2)
    rq_ids = _queue_more(factory, "rq")
    with factory() as s:
        first = jobs.claim_next(s, "w1")
        second = jobs.claim_next(s, "w1")
        assert jobs.claim_next(s, "w1") is None  # the rq job is not the local worker's
    assert first is not None and second is not None
    assert [first.job_id, second.job_id] == ids
    row = _job(factory, first.job_id)
    assert (row.state, row.attempts, row.worker, row.stage) == ("running", 1, "w1", "claimed")
    assert row.heartbeat_at is not None and row.started_at is not None
    with factory() as s:
        assert jobs.claim_job(s, first.job_id, "w2") is None  # already running
        assert jobs.claim_job(s, rq_ids[0], "rq-w") is not None


def _queue_more(factory: sessionmaker[Session], queue: str) -> list[int]:
    with factory() as s:
        model = MlModel(name=f"m-{queue}")
        version = ModelVersion(model=model, version="1")
        job = ConversionJob(model_version=version, state="queued", queue=queue)
        s.add_all([model, version, job])
        s.commit()
        return [job.id]


def test_concurrent_workers_claim_each_job_exactly_once(factory: sessionmaker[Session]) -> None:
    ids = _queue(factory, 12)
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(name: str) -> None:
        try:
            start.wait()
            got: list[int] = []
            while True:
                with factory() as s:
                    claim = jobs.claim_next(s, name)
                if claim is None:
                    break
                got.append(claim.job_id)
            claimed[name] = got
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    everything = sorted(j for got in claimed.values() for j in got)
    assert everything == ids  # none twice, none missed
    for job_id in ids:
        row = _job(factory, job_id)
        assert row.attempts == 1 and row.state == "running"
        assert row.worker is not None and job_id in claimed[row.worker]


def _age(factory: sessionmaker[Session], job_id: int, seconds: float) -> None:
    with factory() as s:
        s.execute(
            update(ConversionJob)
            .where(ConversionJob.id == job_id)
            .values(heartbeat_at=utcnow() - dt.timedelta(seconds=seconds))
        )
        s.commit()


def test_stale_jobs_are_requeued_then_failed_after_the_last_attempt(factory: sessionmaker[Session]) -> None:
    stale_id, fresh_id = _queue(factory, 2)
    with factory() as s:
        a = jobs.claim_job(s, stale_id, "dead")
        b = jobs.claim_job(s, fresh_id, "alive")
    assert a is not None and b is not None
    _age(factory, stale_id, 120)
    _age(factory, fresh_id, 5)
    with factory() as s:
        done = jobs.requeue_stale(s, stale_after_s=60, max_attempts=2)
    assert [(r.job_id, r.state, r.attempts) for r in done] == [(stale_id, "queued", 1)]
    row = _job(factory, stale_id)
    assert (row.state, row.worker, row.progress) == ("queued", None, 0.0)
    assert _job(factory, fresh_id).state == "running"  # a live worker's job is left alone

    with factory() as s:
        again = jobs.claim_next(s, "second")
    assert again is not None and again.job_id == stale_id and again.attempt == 2
    _age(factory, stale_id, 120)
    with factory() as s:
        done = jobs.requeue_stale(s, stale_after_s=60, max_attempts=2)
    assert [(r.job_id, r.state) for r in done] == [(stale_id, "failed")]
    row = _job(factory, stale_id)
    assert row.state == "failed" and row.finished_at is not None
    assert "stopped sending heartbeats (attempt 2 of 2)" in (row.error or "")
    with factory() as s:
        assert jobs.claim_next(s, "third") is None


def test_a_worker_that_lost_its_job_cannot_overwrite_the_new_owner(factory: sessionmaker[Session]) -> None:
    (job_id,) = _queue(factory, 1)
    with factory() as s:
        old = jobs.claim_job(s, job_id, "slow")
    assert old is not None
    _age(factory, job_id, 120)
    with factory() as s:
        jobs.requeue_stale(s, stale_after_s=60, max_attempts=3)
        new = jobs.claim_next(s, "fresh")
    assert new is not None and new.attempt == 2
    with factory() as s:
        assert not jobs.heartbeat(s, old)
        assert not jobs.report_progress(s, old, "late", 0.9)
        assert not jobs.finish_succeeded(
            s, old, artifact_dir="models/m/x/converted", report_path="r", summary={}
        )
        assert not jobs.finish_failed(s, old, "late failure")
        assert jobs.report_progress(s, new, "converting", 0.5)
    row = _job(factory, job_id)
    assert (row.state, row.worker, row.stage, row.progress, row.error) == (
        "running",
        "fresh",
        "converting",
        0.5,
        None,
    )
    with factory() as s:
        version = s.get(ModelVersion, row.model_version_id)
        assert version is not None and version.artifact_dir is None
        assert jobs.finish_succeeded(
            s, new, artifact_dir="models/m/1.0.0/converted", report_path="r", summary={"a": 1}
        )
    row = _job(factory, job_id)
    assert (row.state, row.progress, row.stage) == ("succeeded", 1.0, "done")
    with factory() as s:
        version = s.get(ModelVersion, row.model_version_id)
        assert version is not None
        assert (version.artifact_dir, version.summary) == ("models/m/1.0.0/converted", {"a": 1})
