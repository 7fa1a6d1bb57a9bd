"""job_queue=rq: RQ on the real Redis carries the job id, an RQ worker child process runs the same job
function, the DB row stays the record; Redis down -> 503 and nothing stored; stale jobs go back to RQ."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from catalog_support import store_files
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fleet_api_support import assert_error
from sqlalchemy import update

from fleet_server.catalog.local_process import settings_env
from fleet_server.catalog.worker import LocalWorker
from fleet_server.db import ConversionJob
from fleet_server.db.base import utcnow
from fleet_server.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        return bool(Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except (RedisError, OSError):
        return False


pytestmark = pytest.mark.skipif(not _redis_up(), reason=f"Redis does not answer at {REDIS_URL}")


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Overrides the fleet settings: rq mode on a queue of this test's own, emptied afterwards."""
    from redis import Redis
    from rq import Queue

    queue_name = f"tinyfleet-test-{uuid.uuid4().hex[:12]}"
    yield Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        job_queue="rq",
        redis_url=REDIS_URL,
        rq_queue_name=queue_name,
        job_stale_after_s=60,
    )
    connection = Redis.from_url(REDIS_URL)
    queue = Queue(queue_name, connection=connection)
    for job_id in (
        queue.job_ids + queue.finished_job_registry.get_job_ids() + queue.failed_job_registry.get_job_ids()
    ):
        connection.delete(f"rq:job:{job_id}")
    queue.delete(delete_jobs=True)


def _upload(
    client: TestClient, headers: dict[str, str], files: dict[str, Path], version: str = "1.0.0"
) -> Any:
    client.post("/api/v1/models", json={"name": "tiny"}, headers=headers)
    return client.post(
        "/api/v1/models/tiny/versions",
        data={"version": version},
        files={k: (k, p.read_bytes()) for k, p in files.items()},
        headers=headers,
    )


def _rq_job_ids(settings: Settings) -> list[str]:
    from redis import Redis
    from rq import Queue

    return list(Queue(settings.rq_queue_name, connection=Redis.from_url(settings.redis_url)).job_ids)


@pytest.mark.slow
def test_rq_worker_process_runs_the_uploaded_job(
    settings: Settings, client: TestClient, as_role: Any, tiny_files: dict[str, Path]
) -> None:
    if settings.is_sqlite:
        pytest.skip("RQ workers on other machines share a PostgreSQL; SQLite runs jobs with the local worker")
    r = _upload(client, as_role("operator"), tiny_files)
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    assert job["queue"] == "rq" and job["queue_job_id"].startswith(f"tinyfleet-conversion-{job['id']}-")
    assert _rq_job_ids(settings) == [job["queue_job_id"]]

    # The RQ side as another machine would run it: its own process, settings from TINYFLEET_* only.
    worker = subprocess.run(
        [sys.executable, "-m", "fleet_server.catalog.worker", "--queue", "rq", "--burst"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stderr[-3000:]
    done = client.get(f"/api/v1/jobs/{job['id']}", headers=as_role("viewer")).json()
    assert done["state"] == "succeeded", done["error"]
    assert done["attempts"] == 1 and done["progress"] == 1.0 and done["report"]["num_classes"] == 10
    detail = client.get("/api/v1/models/tiny/versions/1.0.0", headers=as_role("viewer")).json()
    assert detail["status"] == "ready" and "full_int8.tflite" in {a["path"] for a in detail["artifacts"]}
    assert _rq_job_ids(settings) == []


def test_redis_down_refuses_the_upload_and_stores_nothing(
    app: FastAPI, client: TestClient, as_role: Any, tiny_files: dict[str, Path], snapshot: Any
) -> None:
    client.post("/api/v1/models", json={"name": "tiny"}, headers=as_role("operator"))
    app.state.settings.redis_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    before = (snapshot(), store_files(Path(app.state.settings.artifact_dir)))
    error = assert_error(_upload(client, as_role("operator"), tiny_files), 503, "job queue unavailable")
    assert error["code"] == "queue_unavailable" and "nothing was stored" in error["message"]
    assert (snapshot(), store_files(Path(app.state.settings.artifact_dir))) == before


def test_stale_rq_job_is_requeued_into_rq(
    app: FastAPI, settings: Settings, client: TestClient, as_role: Any, tiny_files: dict[str, Path]
) -> None:
    job = _upload(client, as_role("operator"), tiny_files).json()["job"]
    first_rq_id = job["queue_job_id"]
    with app.state.session_factory() as s:  # an RQ worker claimed it, then died
        s.execute(
            update(ConversionJob)
            .where(ConversionJob.id == job["id"])
            .values(
                state="running",
                attempts=1,
                worker="gone:1",
                heartbeat_at=utcnow() - dt.timedelta(seconds=600),
            )
        )
        s.commit()
    with LocalWorker(settings) as sweeper:
        done = sweeper.requeue_stale()
    assert [(d.job_id, d.state) for d in done] == [(job["id"], "queued")]
    now = client.get(f"/api/v1/jobs/{job['id']}", headers=as_role("viewer")).json()
    assert now["state"] == "queued" and now["queue_job_id"] != first_rq_id
    assert _rq_job_ids(settings) == [
        first_rq_id,
        now["queue_job_id"],
    ]  # whichever runs second finds it claimed
