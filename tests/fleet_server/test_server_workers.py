"""`tinyfleet server run --workers N`: several uvicorn processes on one port and one database."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from live_server import live_server_process
from typer.testing import CliRunner

from fleet_server.cli.server_commands import GC_THRESHOLDS, _tune_gc_for_serving, server_app


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").glob("*/children") for c in task.read_text().split()]


@pytest.mark.slow
def test_two_workers_serve_one_database(tmp_path: Path) -> None:
    with live_server_process(tmp_path, workers=2) as server:
        workers = _children(server.process.pid)
        assert len(workers) >= 2, workers  # uvicorn's supervisor + 2 workers (+ maybe a resource tracker)

        def provision(i: int) -> int:
            body = {"id": f"w-{i}", "hardware_class": "pi-4"}
            return httpx.post(
                server.url("/api/v1/devices"), json=body, headers=server.bearer("operator"), timeout=30
            ).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(provision, range(24))) == [201] * 24
        # Whichever worker answers, it sees what the others wrote (one database, migrated once).
        for _ in range(8):
            page = httpx.get(server.url("/api/v1/devices?limit=100"), headers=server.bearer("viewer")).json()
            assert page["total"] == 24
    assert "Traceback" not in server.log, server.log


def test_workers_option_is_validated(tmp_path: Path) -> None:
    env = {"TINYFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", "TINYFLEET_DATA_DIR": str(tmp_path)}
    r = CliRunner().invoke(server_app, ["run", "--workers", "0"], env=env)
    assert r.exit_code == 2 and "--workers" in r.output
    r = CliRunner().invoke(server_app, ["run"], env={**env, "TINYFLEET_API_WORKERS": "0"})
    assert r.exit_code == 2 and "api_workers" in r.output
    r = CliRunner().invoke(server_app, ["run", "--workers", "2"], env=env)  # SQLite + rollout runner
    assert r.exit_code == 2 and "only one process may run the rollout runner" in r.output
    assert not (tmp_path / "w.db").exists()  # refused before touching the database


def test_serving_gc_tuning_freezes_the_startup_heap() -> None:
    before = gc.get_threshold()
    try:
        _tune_gc_for_serving()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
