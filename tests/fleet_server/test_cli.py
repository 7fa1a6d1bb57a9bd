"""`tinyfleet server migrate | create-token | run`: real Typer app, real uvicorn process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fleet_api_support import bearer
from typer.testing import CliRunner

from fleet_server.cli.server_commands import server_app
from fleet_server.db.migrate import head_revision

runner = CliRunner()


def _env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {"TINYFLEET_DATABASE_URL": db_url, "TINYFLEET_DATA_DIR": str(tmp_path / "data")}


def test_migrate_then_create_token_then_use_it(empty_db_url: str, tmp_path: Path) -> None:
    env = _env(empty_db_url, tmp_path)
    r = runner.invoke(server_app, ["migrate", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) | {"database": None} == {
        "database": None,
        "from_revision": None,
        "to_revision": head_revision(),
    }
    again = json.loads(runner.invoke(server_app, ["migrate", "--json"], env=env).stdout)
    assert (again["from_revision"], again["to_revision"]) == (head_revision(), head_revision())

    r = runner.invoke(server_app, ["create-token", "--name", "root", "--role", "admin", "--json"], env=env)
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)
    assert made["role"] == "admin" and made["token"].startswith("tfo_")

    from fastapi.testclient import TestClient

    from fleet_server.api import create_app
    from fleet_server.settings import Settings

    app = create_app(Settings(database_url=empty_db_url, data_dir=tmp_path / "data"))
    try:
        with TestClient(app) as client:
            listed = client.get("/api/v1/tokens", headers=bearer(made["token"]))
            assert listed.status_code == 200
            assert [t["name"] for t in listed.json()["items"]] == ["root"]
            assert made["token"] not in listed.text
            audit = client.get("/api/v1/audit?actor=cli", headers=bearer(made["token"])).json()["items"]
            assert [(a["action"], a["target"], a["actor_kind"]) for a in audit] == [
                ("token.create", "root", "system")
            ]
    finally:
        app.state.engine.dispose()

    # The same name twice is refused and the first token stays the only one.
    dup = runner.invoke(server_app, ["create-token", "--name", "root", "--role", "viewer"], env=env)
    assert dup.exit_code == 2 and "already exists" in dup.output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["create-token", "--role", "root"], "unknown role 'root'"),
        (["create-token", "--name", "bad name"], "token name 'bad name' must match"),
    ],
)
def test_create_token_bad_arguments(tmp_path: Path, args: list[str], fragment: str) -> None:
    db = tmp_path / "x.db"
    r = runner.invoke(server_app, args, env=_env(f"sqlite:///{db}", tmp_path))
    assert r.exit_code == 2 and fragment in r.output
    assert not db.exists()  # refused before touching the database


def test_bad_settings_and_unreachable_database_are_clear_errors(tmp_path: Path) -> None:
    r = runner.invoke(server_app, ["migrate"], env={"TINYFLEET_API_PORT": "99999"})
    assert r.exit_code == 2 and "api_port" in r.output
    r = runner.invoke(
        server_app, ["migrate"], env={"TINYFLEET_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1/x"}
    )
    assert r.exit_code == 2 and "psycopg 3 driver" in r.output and "hunter2" not in r.output
    r = runner.invoke(server_app, ["migrate"], env={"TINYFLEET_DATABASE_URL": "nonsense://u:hunter2@x/y"})
    assert r.exit_code == 2 and "cannot use database" in r.output and "hunter2" not in r.output
    closed = "postgresql+psycopg://u:hunter2@127.0.0.1:1/x?connect_timeout=2"
    r = runner.invoke(server_app, ["migrate"], env={"TINYFLEET_DATABASE_URL": closed})
    assert r.exit_code == 1 and "hunter2" not in r.output and "127.0.0.1" in r.output


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_run_serves_the_api(tmp_path: Path) -> None:
    env = {**os.environ, **_env(f"sqlite:///{tmp_path / 'run.db'}", tmp_path)}
    token = json.loads(runner.invoke(server_app, ["create-token", "--json"], env=env).stdout)["token"]
    port = _free_port()
    code = "from fleet_server.cli.server_commands import server_app; server_app()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "run", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up within 30 s"
            time.sleep(0.1)
        made = httpx.post(
            f"{base}/api/v1/devices", json={"id": "real-1", "hardware_class": "pi-4"}, headers=bearer(token)
        )
        assert made.status_code == 201
        secret = made.json()["credential"]["password"]
        assert httpx.get(f"{base}/api/v1/device/self", auth=("real-1", secret)).json()["id"] == "real-1"
        assert httpx.get(f"{base}/api/v1/devices").status_code == 401
        # 60 clients at once, mixing reads, health checks and refusals (each refusal writes an audit row):
        # all must be answered. Guards against sessions holding a pooled connection while waiting for a
        # second one (health check, audit writer), which used to deadlock the pool under concurrency.
        calls = [
            ("/healthz", {}, 200),
            ("/api/v1/devices", bearer(token), 200),
            ("/api/v1/devices", {}, 401),
        ] * 20
        with ThreadPoolExecutor(max_workers=60) as pool:
            codes = list(
                pool.map(lambda c: httpx.get(base + c[0], headers=c[1], timeout=20).status_code, calls)
            )
        assert codes == [c[2] for c in calls]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    # uvicorn's log (stderr) never carries the secrets.
    assert token not in err.decode() and secret not in err.decode()
