"""Where conversion runs: never in the API process; in a worker child the server starts
(job_worker_autostart) or in `tinyfleet worker run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from catalog_support import wait_for
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fleet_server.api import create_app
from fleet_server.auth import Role, issue_token
from fleet_server.cli.main import app as cli_app
from fleet_server.settings import Settings


def test_api_process_never_imports_tensorflow(tmp_path: Path, tiny_files: dict[str, Path]) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        from fastapi.testclient import TestClient
        from fleet_server.api import create_app
        from fleet_server.auth import Role, issue_token
        from fleet_server.settings import Settings

        app = create_app(Settings(data_dir={str(tmp_path / "data")!r}))
        with app.state.session_factory() as s:
            token = issue_token(s, name="op", role=Role.operator, created_by="t").secret
            s.commit()
        h = {{"Authorization": "Bearer " + token}}
        files = {json.dumps({k: str(v) for k, v in tiny_files.items()})}
        with TestClient(app) as c:
            c.post("/api/v1/models", json={{"name": "tiny"}}, headers=h)
            r = c.post("/api/v1/models/tiny/versions", data={{"version": "1"}},
                       files={{k: open(v, "rb") for k, v in files.items()}}, headers=h)
            job = c.get("/api/v1/jobs/1", headers=h).json()
            c.get("/api/v1/models/tiny/versions/1", headers=h)
        heavy = sorted(m for m in ("tensorflow", "keras", "ai_edge_litert", "converters.pipeline")
                       if m in sys.modules)
        print(json.dumps({{"status": r.status_code, "state": job["state"], "heavy": heavy}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"status": 202, "state": "queued", "heavy": []}


@pytest.mark.slow
def test_server_starts_and_stops_its_local_worker_process(
    tmp_path: Path, tiny_files: dict[str, Path]
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        job_worker_autostart=True,
        job_poll_interval_s=0.2,
        job_heartbeat_interval_s=1,
    )
    app = create_app(settings)
    with app.state.session_factory() as s:
        headers = {
            "Authorization": "Bearer " + issue_token(s, name="op", role=Role.operator, created_by="t").secret
        }
        s.commit()
    try:
        with TestClient(app) as client:  # lifespan: the worker child starts here
            client.post("/api/v1/models", json={"name": "tiny"}, headers=headers)
            r = client.post(
                "/api/v1/models/tiny/versions",
                data={"version": "1"},
                files={k: (k, p.read_bytes()) for k, p in tiny_files.items()},
                headers=headers,
            )
            job_id = r.json()["job"]["id"]

            def finished() -> Any:
                job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
                return job if job["state"] in ("succeeded", "failed") else None

            job = wait_for(finished, 240, "the autostarted worker to convert", 0.3)
        assert job["state"] == "succeeded", job["error"]
        pid = int(job["worker"].rsplit(":", 1)[1])
        assert pid != os.getpid()  # a child process, not a thread of the API process
        with pytest.raises(ProcessLookupError):  # stopped (and reaped) with the app
            os.kill(pid, 0)
    finally:
        app.state.engine.dispose()


def test_worker_run_command(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYFLEET_DATABASE_URL", db_url)
    monkeypatch.setenv("TINYFLEET_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    idle = runner.invoke(cli_app, ["worker", "run", "--queue", "local", "--burst"])
    assert idle.exit_code == 0, idle.output  # nothing queued: a burst worker exits at once
    bad = runner.invoke(cli_app, ["worker", "run", "--queue", "celery"])
    assert bad.exit_code == 2 and "--queue must be local or rq" in bad.stderr
    monkeypatch.setenv("TINYFLEET_JOB_MAX_ATTEMPTS", "0")
    invalid = runner.invoke(cli_app, ["worker", "run", "--burst"])
    assert invalid.exit_code == 2 and "job_max_attempts" in invalid.stderr
