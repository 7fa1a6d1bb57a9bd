"""`tinyfleet rollout ...` against the real API served by uvicorn, and `tinyfleet rollouts run --once`."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from runner_support import add_devices, add_release
from typer.testing import CliRunner

from fleet_server.cli.main import app as cli
from fleet_server.db import make_engine, make_session_factory
from fleet_server.db.migrate import upgrade_to_head

runner = CliRunner()


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    with app.state.session_factory() as s:
        add_release(s, 1)
        add_release(s, 2)
        s.commit()
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _cli(base_url: str, token: str, *args: str) -> object:
    return runner.invoke(cli, [*args], env={"TINYFLEET_SERVER": base_url, "TINYFLEET_TOKEN": token})


def test_rollout_commands(base_url: str, tokens: dict[str, str], tmp_path: Path) -> None:
    op = tokens["operator"]
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"control": {"fraction": 0.1, "min_devices": 3}, "schedule": {"burst": 10}}))
    r = _cli(
        base_url,
        op,
        "rollout",
        "start",
        "kws-2",
        "--hardware-class",
        "esp32-s3",
        "--min-soak-s",
        "0",
        "--plan",
        str(plan),
        "--json",
    )
    assert r.exit_code == 0, r.output
    ro = json.loads(r.stdout)
    rid = ro["id"]
    assert ro["target"]["hardware_classes"] == ["esp32-s3"] and ro["status"] == "running"

    r = _cli(base_url, op, "rollout", "status", rid)
    assert r.exit_code == 0 and rid in r.stdout and "canary" in r.stdout
    r = _cli(base_url, tokens["viewer"], "rollout", "list", "--json")
    assert [i["id"] for i in json.loads(r.stdout)["items"]] == [rid]
    r = _cli(base_url, op, "rollout", "list")
    assert r.exit_code == 0 and "running" in r.stdout

    r = _cli(base_url, op, "rollout", "pause", rid, "--reason", "checking", "--json")
    assert json.loads(r.stdout)["status"] == "paused"
    r = _cli(base_url, op, "rollout", "pause", rid)
    assert r.exit_code == 1 and "cannot pause a rollout that is paused" in r.output
    r = _cli(base_url, tokens["viewer"], "rollout", "resume", rid)
    assert r.exit_code == 1 and "403" in r.output
    r = _cli(base_url, op, "rollout", "resume", rid, "--override-soft-failures", "--json")
    assert json.loads(r.stdout)["status"] == "running"
    r = _cli(base_url, op, "rollout", "rollback", rid, "--reason", "by hand")
    assert r.exit_code == 0 and "rolled_back" in r.stdout
    # --watch ends at a terminal state (here: at once), one JSON line per refresh with --json.
    r = _cli(base_url, op, "rollout", "status", rid, "--watch", "--json", "--interval", "0.1")
    assert r.exit_code == 0 and json.loads(r.stdout.strip().splitlines()[-1])["status"] == "rolled_back"
    r = _cli(base_url, op, "rollout", "status", rid, "--watch", "--interval", "0.1")
    assert r.exit_code == 0 and "rolled_back" in r.stdout


def test_rollout_command_errors(base_url: str, tokens: dict[str, str], tmp_path: Path) -> None:
    op = tokens["operator"]
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    r = _cli(base_url, op, "rollout", "start", "kws-2", "--plan", str(bad))
    assert r.exit_code == 2 and "cannot read plan" in r.output
    bad.write_text("[1, 2]")
    r = _cli(base_url, op, "rollout", "start", "kws-2", "--plan", str(bad))
    assert r.exit_code == 2 and "JSON object" in r.output
    r = _cli(base_url, op, "rollout", "start", "nope-1")
    assert r.exit_code == 1 and "does not exist" in r.output
    r = _cli(base_url, op, "rollout", "status", "ro-missing")
    assert r.exit_code == 1 and "404" in r.output
    r = _cli(base_url, op, "rollout", "list", "--status", "exploded")
    assert r.exit_code == 1 and "422" in r.output
    r = runner.invoke(
        cli, ["rollout", "list"], env={"TINYFLEET_SERVER": "http://127.0.0.1:9", "TINYFLEET_TOKEN": op}
    )
    assert r.exit_code == 3


def test_rollouts_run_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'run.db'}"
    engine = make_engine(url)
    upgrade_to_head(engine)
    add_devices(engine, 5, counter=None)
    with make_session_factory(engine)() as s:
        add_release(s, 1)
        s.commit()
    engine.dispose()
    env = {"TINYFLEET_DATABASE_URL": url, "TINYFLEET_DATA_DIR": str(tmp_path), "TINYFLEET_MQTT_PORT": "9"}
    r = runner.invoke(cli, ["rollouts", "run", "--once"], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "leading": True,
        "rollouts": 0,
        "decisions": 0,
        "commands": 0,
        "sent": 0,
        "errors": 0,
    }
