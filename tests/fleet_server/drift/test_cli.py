"""`tinyfleet drift|alerts|retraining` against the API served by a real uvicorn."""

from __future__ import annotations

import json
from typing import Any

from drift_support import T0, Fleet, make_baseline, provision_devices, register_release, served
from typer.testing import CliRunner

from fleet_server.cli.main import app as cli
from fleet_server.db.base import utcnow

runner = CliRunner()
BASELINE = make_baseline()


def _run(args: list[str], env: dict[str, str], code: int = 0) -> Any:
    r = runner.invoke(cli, args, env=env)
    assert r.exit_code == code, r.output
    return r


def _json(args: list[str], env: dict[str, str]) -> Any:
    return json.loads(_run([*args, "--json"], env).stdout)


def test_drift_alerts_and_retraining_commands(app, settings, tokens) -> None:
    with app.state.session_factory() as s:
        register_release(s, settings.artifact_dir, BASELINE)
        provision_devices(s, ["mcu-0", "mcu-1"])
        fleet = Fleet(BASELINE)
        fleet.add(["mcu-0", "mcu-1"], shift=0.6, count=8)
        fleet.store(s)
        s.commit()
    window_s = int(utcnow().timestamp()) - T0 + 3600
    with served(app) as url:
        env = {"TINYFLEET_SERVER": url, "TINYFLEET_TOKEN": tokens["operator"]}
        out = _json(["drift", "evaluate", "--model", "kws", "--window-s", str(window_s)], env)
        assert {g["cohort"]: g["status"] for g in out["groups"]} == {
            "all": "significant",
            "hw:esp32-s3": "significant",
        }
        status = _json(["drift", "status", "--model", "kws"], env)
        assert status["total"] == 2 and all(d["max_psi"] > 0.3 for d in status["items"])
        table = _run(["drift", "status", "--features"], {**env, "COLUMNS": "200"}).stdout
        assert "significant" in table and "hw:esp32-s3" in table

        alerts = _json(["alerts", "list", "--state", "open"], env)["items"]
        assert {a["code"] for a in alerts} == {"drift_moderate"}
        alert_id = alerts[0]["id"]
        acked = _json(["alerts", "ack", str(alert_id), "--note", "on it"], env)
        assert acked["state"] == "acknowledged" and "on it" in acked["note"]
        again = _run(["alerts", "ack", str(alert_id)], env, code=1)
        assert "already acknowledged" in again.output and "409" in again.output
        assert _json(["alerts", "resolve", str(alert_id)], env)["state"] == "resolved"
        assert "P2" in _run(["alerts", "list"], env).stdout

        report = _json(["retraining", "show", "kws", "--c", "500", "--v", "0.01"], env)
        assert report["version"] == 3 and report["q_source"] == "observed"
        bad = _run(["retraining", "show", "kws", "--c", "-1"], env, code=1)
        assert "validation_error" in bad.output
        assert "Retraining interval" in _run(["retraining", "show", "kws"], env).stdout
        missing = _run(["retraining", "show", "nope"], env, code=1)
        assert "no model named 'nope'" in missing.output
        events = _json(["retraining", "events", "--pending"], env)
        assert {e["cohort"] for e in events["items"]} == {"all", "hw:esp32-s3"}

        viewer = {**env, "TINYFLEET_TOKEN": tokens["viewer"]}
        denied = _run(["alerts", "resolve", str(alerts[-1]["id"])], viewer, code=1)
        assert "403" in denied.output
