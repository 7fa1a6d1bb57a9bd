"""Faults in the middle of a staged rollout: the rollout runner process SIGKILLed and restarted, the broker
restarted. The rollout must resume and complete; no device may be updated twice or forgotten.

Real: PostgreSQL, a private Mosquitto with persistence, the rollout runner as a child process (wall clock,
advisory lock, outbox, QoS 1 publisher), the ingest worker. Simulated: 30 devices with their own MQTT
connections and persistent sessions that answer ``cmd.update`` like an agent reports it
(tests/support/answering_devices.py). Checked against the outbox (``rollout_commands``): one update row per
device, every row sent, every device got exactly its row's ``cmd_id`` (a redelivery of the same id is
allowed: agents de-duplicate by ``cmd_id``), and the devices' reported version is the new one.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from answering_devices import AnsweringDevices
from device_fleet import FaultCounts
from mosquitto_broker import MosquittoBroker
from process_harness import wait_until
from reliability_results import record
from rollout_runner_process import RunnerProcess
from sqlalchemy import Engine, select

from fleet_server.db import Device, RolloutCommand, RolloutRow, make_session_factory
from fleet_server.ingest.config import IngestConfig
from fleet_server.ingest.worker import BrokerAddress, IngestWorker
from fleet_server.rollout_runner import service
from fleet_server.rollouts.model import ControlPlan, SchedulePlan, StagePlan

pytestmark = pytest.mark.slow

RUNNER_SUPPORT = Path(__file__).resolve().parents[1] / "fleet_server" / "rollout_runner" / "runner_support.py"


def _runner_support() -> Any:
    name = "tinyfleet_reliability_runner_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, RUNNER_SUPPORT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _rollout(engine: Engine, rollout_id: str) -> tuple[str, dict[str, Any]]:
    with engine.connect() as conn:
        status, state = conn.execute(
            select(RolloutRow.status, RolloutRow.state).where(RolloutRow.id == rollout_id)
        ).one()
    return status, state


def test_runner_killed_and_broker_restarted_mid_rollout_resumes_without_double_or_missed_updates(
    request: pytest.FixtureRequest, pg_only: str, engine: Engine, persistent_broker: MosquittoBroker
) -> None:
    rs = _runner_support()
    ids = rs.add_devices(engine, 30, counter=1, prefix=f"rf{random.randrange(10**6)}")
    with make_session_factory(engine)() as s:
        rs.add_release(s, 1)
        rs.add_release(s, 2)
        s.commit()
    b = persistent_broker
    worker = IngestWorker(
        engine,
        BrokerAddress(b.host, b.port),
        IngestConfig(client_id=f"ing-rf-{random.randrange(10**6)}", batch_size=200, retry_max_s=0.5),
    )
    worker.start()
    assert worker.wait_subscribed(15)
    devices = AnsweringDevices(ids, b.host, b.port, model=rs.MODEL, report_s=1.0)
    lock_key = random.randrange(2**62)
    runner = RunnerProcess(pg_only, b.host, b.port, lock_key=lock_key).start()
    runners_started = 1
    try:
        with make_session_factory(engine)() as s:
            row = service.create_rollout(
                s,
                service.CreateRequest(
                    release_id=f"{rs.MODEL}-2",
                    stages=[
                        StagePlan(name="canary", fraction=0.1, min_devices=3, min_soak_s=0),
                        StagePlan(name="50%", fraction=0.5, min_devices=3, min_soak_s=0),
                        StagePlan(name="100%", fraction=1.0, min_devices=3, min_soak_s=0),
                    ],
                    control=ControlPlan(fraction=0.1, min_devices=3),
                    schedule=SchedulePlan(devices_per_minute=100_000),
                ),
                actor="reliability",
                now=time.time(),
            )
            s.commit()
            rid = row.id

        def at_stage(n: int) -> Callable[[], bool]:
            return lambda: (
                _rollout(engine, rid)[1].get("stage_index", 0) >= n or _rollout(engine, rid)[0] != "running"
            )

        # Fault 1: the runner dies (SIGKILL) once the canary has been commanded; a new process takes over.
        assert wait_until(lambda: len(_rollout(engine, rid)[1].get("exposed", [])) > 0, 60)
        runner.kill()
        time.sleep(1.0)
        runner = RunnerProcess(pg_only, b.host, b.port, lock_key=lock_key).start()
        runners_started += 1
        # Fault 2: the broker restarts once the rollout is past the canary.
        assert wait_until(at_stage(1), 90), _rollout(engine, rid)
        status_at_restart, state_at_restart = _rollout(engine, rid)
        b.stop()
        time.sleep(1.0)
        b.start()
        assert wait_until(lambda: _rollout(engine, rid)[0] != "running", 120), _rollout(engine, rid)
        status, state = _rollout(engine, rid)
        # Let the last commands land and the devices' answers reach the database.
        exposed = set(state.get("exposed", []))
        wait_until(lambda: exposed <= {d for d, c in devices.running.items() if c == 2}, 30)
    finally:
        runner.stop()
        devices.close()
        worker.stop()
    with engine.connect() as conn:
        outbox = conn.execute(
            select(RolloutCommand.device_id, RolloutCommand.cmd_id, RolloutCommand.sent_at).where(
                RolloutCommand.rollout_id == rid, RolloutCommand.kind == "update"
            )
        ).all()
        versions = dict(conn.execute(select(Device.id, Device.current_version)).all())
    got = devices.distinct_commands()
    per_device: dict[str, list[str]] = {}
    for device_id, cmd_id, _sent in outbox:
        per_device.setdefault(device_id, []).append(cmd_id)
    updated_twice = [d for d, cmds in per_device.items() if len(cmds) > 1]
    forgotten = [d for d, cmds in per_device.items() if not set(cmds) <= got.get(d, set())]
    unexpected = [d for d, cmds in got.items() if cmds - set(per_device.get(d, []))]
    counts = record(
        FaultCounts(
            fault="rollout runner SIGKILLed + broker restarted mid-rollout",
            sent=len(outbox),
            stored=sum(1 for d in per_device if set(per_device[d]) <= got.get(d, set())),
            lost=len(forgotten),
            duplicates_stored=len(updated_twice),
        ),
        request.node.nodeid,
        status=status,
        exposed=len(exposed),
        runners_started=runners_started,
        broker_restarted_at_stage=state_at_restart.get("stage_index"),
        unsent_rows=sum(1 for *_x, sent in outbox if sent is None),
        unexpected_commands=len(unexpected),
    )
    assert status_at_restart == "running", "the broker restart must hit a running rollout"
    assert status == "completed", state.get("last_hold_reason")
    assert counts.lost == 0 and updated_twice == [] and unexpected == []
    assert set(per_device) == exposed, "every exposed device has exactly one update command in the outbox"
    assert all(sent is not None for *_x, sent in outbox)
    assert all(versions[d] == "2" for d in exposed), "every exposed device reports the new version"
