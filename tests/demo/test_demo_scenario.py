"""The demo's scenario as a test (issue 6): a private Mosquitto configured with the server-generated
passwd/ACL, a private PostgreSQL schema, 16 real agents, the real converter, signing, OTA over HTTP.

Asserted on the stored OUTCOMES, read from the database (not from the demo's own report):

* the good release reaches 100 %: the rollout completed and every device reports its counter;
* the bad release is stopped at the canary stage and rolled back: no device outside the canary cohort
  ever ran it or installed it (telemetry windows + OTA status rows), and every exposed device reports
  the previous release again;
* drift on the pi-zero-2w devices stores a PSI alert and a retraining-trigger event;
* the low-battery cohort has FallbackSwitched events down (reason battery) and back up (recovered).
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from mosquitto_broker import MosquittoBroker, free_port, mosquitto_available
from postgres import postgres_reachable, postgres_schema_url

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed"),
    pytest.mark.skipif(not postgres_reachable(), reason="PostgreSQL does not answer on 127.0.0.1:5432"),
]

DEVICES = 16
SERVER_USER = "tinyfleet-server"


@pytest.fixture(scope="module")
def demo_run(demo_out: Path) -> Iterator[tuple[Any, Any]]:
    from fleet_server.broker_config import write_broker_config
    from fleet_server.demo.orchestrator import DemoOptions, DemoRun

    out = demo_out
    port = free_port()
    password = secrets.token_urlsafe(16)
    brokers: list[MosquittoBroker] = []

    def start_broker(stack: Any) -> None:
        # The broker authenticates every device with the hash the server stored at provisioning.
        conf_dir = out / "broker-config"
        with stack.sessions() as session:
            write_broker_config(
                session, conf_dir, server_user=SERVER_USER, server_password=password, iterations=1000
            )
        broker = MosquittoBroker(
            out / "broker",
            port=port,
            allow_anonymous=False,
            extra_config=[f"password_file {conf_dir / 'passwd'}", f"acl_file {conf_dir / 'acl'}"],
        )
        broker.start()
        brokers.append(broker)

    with postgres_schema_url(prefix="tf_demo") as url:
        options = DemoOptions(
            out=out,
            devices=DEVICES,
            mqtt_url=f"mqtt://127.0.0.1:{port}",
            mqtt_username=SERVER_USER,
            mqtt_password=password,
            database_url=url,
            sample_period_s=2.0,
            soak_s=300,
            tasks=("kws",),
            skip_build=True,
            on_provisioned=start_broker,
        )
        run = DemoRun(options, Console(width=160, stderr=True))
        try:
            result = run.run()
            yield run, result
        finally:
            run.close()
            for b in brokers:
                b.stop()


def _phase(result: Any, name: str) -> Any:
    phase = result.phase(name)
    assert phase is not None, name
    return phase


def test_fleet_came_up_through_the_real_broker_acl(demo_run: tuple[Any, Any]) -> None:
    run, result = demo_run
    assert _phase(result, "fleet up").status == "ok", _phase(result, "fleet up").detail
    from fleet_server.db import Device, TelemetryWindow

    with run.stack.sessions() as s:
        reporting = set(s.scalars(select(TelemetryWindow.device_id).distinct()))
        devices = set(s.scalars(select(Device.id)))
    assert len(devices) == DEVICES
    assert reporting == devices  # every device authenticated with its own credential and was stored


def test_good_release_reaches_every_device(demo_run: tuple[Any, Any]) -> None:
    run, result = demo_run
    phase = _phase(result, "release + rollout to 100 %")
    assert phase.status == "ok", phase.detail
    from fleet_server.db import Device, TelemetryWindow
    from fleet_server.db.rollouts import RolloutRow

    good = run.releases["good"]
    with run.stack.sessions() as s:
        row = s.get(RolloutRow, phase.figures["rollout"])
        devices = set(s.scalars(select(Device.id)))
        ran = set(
            s.scalars(
                select(TelemetryWindow.device_id)
                .where(
                    TelemetryWindow.model_name == good["model_name"],
                    TelemetryWindow.model_version == good["counter"],
                )
                .distinct()
            )
        )
    assert row.status == "completed"
    assert ran == devices  # every device, control group included, reported windows on the release
    assert phase.figures["devices_on_release"] == DEVICES


def test_bad_release_stopped_at_canary_and_rolled_back(demo_run: tuple[Any, Any]) -> None:
    run, result = demo_run
    phase = _phase(result, "bad release stopped at canary")
    assert phase.status == "ok", phase.detail
    from fleet_server.db import OtaStatusReport, TelemetryWindow
    from fleet_server.db.rollouts import RolloutDecision, RolloutRow

    bad, good = run.releases["bad"], run.releases["good"]
    rollout_id = phase.figures["rollout"]
    with run.stack.sessions() as s:
        row = s.get(RolloutRow, rollout_id)
        decisions = list(
            s.scalars(
                select(RolloutDecision)
                .where(RolloutDecision.rollout_id == rollout_id)
                .order_by(RolloutDecision.seq)
            )
        )
        ran = set(
            s.scalars(
                select(TelemetryWindow.device_id)
                .where(
                    TelemetryWindow.model_name == bad["model_name"],
                    TelemetryWindow.model_version == bad["counter"],
                )
                .distinct()
            )
        )
        installed = set(
            s.scalars(
                select(OtaStatusReport.device_id).where(OtaStatusReport.release_id == bad["id"]).distinct()
            )
        )
    assert row.status == "rolled_back"
    rollback = next(d for d in decisions if d.action == "rollback")
    assert rollback.stage_name == "canary"
    assert any(
        g["name"] == "false_positive" and g["verdict"] == "hard_fail" for g in rollback.record["gate_results"]
    )
    canary_size = rollback.record["counts"]["target"]
    exposed = set(row.state["exposed"])
    assert 0 < len(exposed) <= canary_size < DEVICES // 2
    # Nobody outside the commanded canary ever ran or installed the bad model.
    assert ran <= exposed and installed <= exposed
    assert ran  # the canary really ran it: the gate judged reported counts, not a guess
    # Rolled back: every exposed device reported windows on the previous release after the decision.
    with run.stack.sessions() as s:
        back = set(
            s.scalars(
                select(TelemetryWindow.device_id)
                .where(
                    TelemetryWindow.device_id.in_(exposed),
                    TelemetryWindow.model_version == good["counter"],
                    TelemetryWindow.window_start_s >= int(rollback.at),
                )
                .distinct()
            )
        )
    assert back == exposed
    assert phase.figures["back_on_previous"] == len(exposed)


def test_drift_raised_psi_alert_and_retraining_event(demo_run: tuple[Any, Any]) -> None:
    run, result = demo_run
    phase = _phase(result, "input drift -> PSI alert")
    assert phase.status == "ok", phase.detail
    from fleet_server.db import AlertRow
    from fleet_server.db.drift import RetrainingEvent

    with run.stack.sessions() as s:
        alerts = list(s.scalars(select(AlertRow).where(AlertRow.code.like("%drift%"))))
        events = list(s.scalars(select(RetrainingEvent)))
    assert alerts and events
    drifted_class = "hw:pi-zero-2w"
    assert any(a.cohort == drifted_class for a in alerts), [(a.code, a.cohort) for a in alerts]
    assert any(e.cohort == drifted_class for e in events), [(e.cohort, e.reasons) for e in events]


def test_low_battery_cohort_fell_back_and_stepped_up(demo_run: tuple[Any, Any]) -> None:
    run, result = demo_run
    phase = _phase(result, "low battery -> fallback and back")
    assert phase.status == "ok", phase.detail
    from fleet_server.db import DeviceEvent

    cohort = phase.figures["cohort"]
    assert cohort
    good = run.releases["good"]
    with run.stack.sessions() as s:
        rows = list(
            s.scalars(
                select(DeviceEvent)
                .where(DeviceEvent.device_id.in_(cohort), DeviceEvent.type == "fallback_switched")
                .order_by(DeviceEvent.ts)
            )
        )
    for device in cohort:
        events = [r.body for r in rows if r.device_id == device]
        downs = [
            i for i, e in enumerate(events) if e["reason"] == "battery" and e["to_level"] > e["from_level"]
        ]
        ups = [
            i for i, e in enumerate(events) if e["reason"] == "recovered" and e["to_level"] < e["from_level"]
        ]
        assert downs and ups, (device, events)
        assert max(ups) > min(downs)  # back up after falling back
        assert events[max(ups)]["to_level"] == 0
        # ... and level 0 is the installed release, not the factory primary the chain started with.
        back = events[max(ups)]["model"]
        assert (back["name"], back["version"]) == (good["model_name"], good["counter"]), (device, back)
