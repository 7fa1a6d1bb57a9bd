"""The runner end to end against the real Mosquitto and the real DB (SQLite and PostgreSQL): a good release
goes canary -> ... -> 100 % and releases the control group; a bad one (more false positives in the cohort
than in the control group) is stopped at the canary and rolled back, and only the canary got commands."""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_support import FakeDevices, FleetSim, SimClock, add_devices, add_release, builder
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))
from mosquitto_broker import SYSTEM_BROKER, port_open

from fleet_server.alert_store import AlertRow
from fleet_server.db import RolloutCommand, RolloutDecision, RolloutRow, make_engine, make_session_factory
from fleet_server.rollout_runner import service
from fleet_server.rollout_runner.baselines import BaselineCache
from fleet_server.rollout_runner.leader import LeaderLock
from fleet_server.rollout_runner.publisher import BrokerAddress, MqttCommandPublisher
from fleet_server.rollout_runner.runner import RolloutRunner
from fleet_server.rollouts.model import ControlPlan, StagePlan, TargetFilter

N = 60


@pytest.fixture
def broker() -> tuple[str, int]:
    if not port_open(*SYSTEM_BROKER):
        pytest.skip("no MQTT broker on 127.0.0.1:1883")
    return SYSTEM_BROKER


@pytest.fixture
def world(db_url: str, broker: tuple[str, int], tmp_path: Path) -> Iterator[dict]:
    engine = make_engine(db_url)
    prefix = f"sc{random.randrange(10**6):06d}"  # the broker is shared: topics of this test only
    ids = add_devices(engine, N, counter=1, prefix=prefix)
    with make_session_factory(engine)() as s:
        add_release(s, 1)
        add_release(s, 2)
        s.commit()
    clock = SimClock()
    publisher = MqttCommandPublisher(BrokerAddress(*broker), timeout_s=10)
    runner = RolloutRunner(
        engine=engine,
        builder=builder(retarget_delay_s=300),
        publisher=publisher,
        baselines=BaselineCache(tmp_path),
        leader=LeaderLock(engine, random.randrange(1, 2**62)),
        now=clock,
    )
    devices = FakeDevices(*broker, ids)
    yield {"engine": engine, "ids": ids, "clock": clock, "runner": runner, "devices": devices}
    devices.close()
    publisher.close()
    runner.leader.release()
    engine.dispose()


def _start(engine, clock: SimClock) -> str:
    with make_session_factory(engine)() as s:
        row = service.create_rollout(
            s,
            service.CreateRequest(
                release_id="kws-2",
                target=TargetFilter(hardware_classes=["esp32-s3"]),
                # The default plan asks 10 reporting devices at 10 %: more than 10 % of this small fleet.
                stages=[
                    StagePlan(
                        name="canary", fraction=0.01, min_devices=5, min_soak_s=600, min_reporting_devices=5
                    ),
                    StagePlan(
                        name="25%", fraction=0.25, min_devices=10, min_soak_s=600, min_reporting_devices=10
                    ),
                    StagePlan(
                        name="50%", fraction=0.5, min_devices=20, min_soak_s=600, min_reporting_devices=20
                    ),
                    StagePlan(
                        name="100%", fraction=1.0, min_devices=20, min_soak_s=600, min_reporting_devices=40
                    ),
                ],
                control=ControlPlan(fraction=0.05, min_devices=15),
            ),
            actor="test",
            now=clock(),
        )
        s.commit()
        return row.id


def _run(world: dict, sim: FleetSim, rollout_id: str, max_steps: int = 40) -> RolloutRow:
    engine, clock, runner, devices = world["engine"], world["clock"], world["runner"], world["devices"]
    sent = 0
    for _ in range(max_steps):
        report = runner.tick()
        assert report.errors == 0 and report.leading
        sent += report.drained.sent
        sim.apply(devices.wait_for(sent), clock())
        clock.advance(300)
        sim.report(clock())
        with make_session_factory(engine)() as s:
            row = s.get(RolloutRow, rollout_id)
            if row.finished:
                return row
    return row


def test_good_release_advances_to_100_percent(world: dict) -> None:
    engine, ids = world["engine"], world["ids"]
    rid = _start(engine, world["clock"])
    sim = FleetSim(engine, ids, 1, {1: 5, 2: 5})
    row = _run(world, sim, rid)
    assert row.status == "completed" and row.finished
    with make_session_factory(engine)() as s:
        actions = [
            d.action
            for d in s.scalars(
                select(RolloutDecision).where(RolloutDecision.rollout_id == rid).order_by(RolloutDecision.seq)
            )
        ]
        commands = s.scalars(select(RolloutCommand).where(RolloutCommand.rollout_id == rid)).all()
    assert actions[0] == "start" and actions.count("advance") == 3 and actions[-1] == "complete"
    assert "rollback" not in actions and "pause" not in actions
    # Every device (the control group too, once released) was told exactly once, and every command arrived.
    assert Counter(c.device_id for c in commands) == Counter(ids)
    assert {c.kind for c in commands} == {"update"} and all(c.sent_at is not None for c in commands)
    received = world["devices"].snapshot()
    assert sorted(d for d, _ in received) == sorted(ids)
    assert {m.cmd_id for _, m in received} == {c.cmd_id for c in commands}
    assert all(
        m.type == "cmd.update" and m.target_version == 2 and m.release_id == "kws-2" for _, m in received
    )
    assert set(sim.running.values()) == {2}
    assert row.summary["pending"] == 0 and row.summary["exposed"] == N


def test_bad_release_is_stopped_at_canary_and_rolled_back(world: dict) -> None:
    engine, ids, devices = world["engine"], world["ids"], world["devices"]
    rid = _start(engine, world["clock"])
    sim = FleetSim(engine, ids, 1, {1: 5, 2: 30})  # 3 % false wakes on the candidate vs 0.5 %
    row = _run(world, sim, rid)
    assert row.status == "rolled_back" and row.finished  # finished: every exposed device is back on 1
    state = service.state_of(row)
    assert state.stage.name == "canary"
    canary = set(state.exposed)
    assert 5 <= len(canary) <= 6 and set(state.reverted) == canary
    with make_session_factory(engine)() as s:
        decisions = s.scalars(
            select(RolloutDecision).where(RolloutDecision.rollout_id == rid).order_by(RolloutDecision.seq)
        ).all()
        commands = s.scalars(select(RolloutCommand).where(RolloutCommand.rollout_id == rid)).all()
        alerts = s.scalars(select(AlertRow).where(AlertRow.rollout_id == rid)).all()
    rollback = decisions[-1]
    assert rollback.action == "rollback" and rollback.actor == "controller"
    assert "false_positive" in rollback.record["reason"]
    fp = next(g for g in rollback.record["gate_results"] if g["name"] == "false_positive")
    assert fp["verdict"] == "hard_fail" and fp["evidence"]["cohort_fp"] > fp["evidence"]["control_fp"]
    assert fp["values"]["cohort_rate"] > 5 * fp["values"]["control_rate"]
    # Commands reached only the canary cohort: updates, then the immediate revert; the rapid retarget was
    # skipped because every device already reported the previous version.
    assert {c.device_id for c in commands} == canary
    kinds = Counter(c.kind for c in commands)
    assert kinds == {"update": len(canary), "revert": len(canary), "retarget": len(canary)}
    assert all(c.skipped for c in commands if c.kind == "retarget")
    received = devices.snapshot()
    assert {d for d, _ in received} == canary
    assert Counter(m.type for _, m in received) == {"cmd.update": len(canary), "cmd.rollback": len(canary)}
    assert row.summary["time_to_recovery_s"] >= 0
    assert any(a.code == "rollout_rolled_back" and a.severity == "P1" for a in alerts)


def test_operator_rollback_reaches_exposed_devices(world: dict) -> None:
    engine, ids, devices, clock, runner = (
        world["engine"],
        world["ids"],
        world["devices"],
        world["clock"],
        world["runner"],
    )
    rid = _start(engine, clock)
    report = runner.tick()  # the canary gets its update commands
    canary = {d for d, _ in devices.wait_for(report.drained.sent)}
    assert len(canary) == report.drained.sent >= 5
    with make_session_factory(engine)() as s:
        row = service.apply_action(
            s, rid, "rollback", actor="alice", now=clock(), builder=runner.builder, reason="field reports"
        )
        s.commit()
        assert row.status == "rolled_back" and not row.finished
    report = runner.tick()
    got = devices.wait_for(2 * len(canary))
    reverts = [(d, m) for d, m in got if m.type == "cmd.rollback"]
    assert {d for d, _ in reverts} == canary and len(reverts) == len(canary)
    assert all(m.reason == "field reports" and m.release_id == "kws-2" for _, m in reverts)
    with make_session_factory(engine)() as s:
        last = s.scalars(
            select(RolloutDecision)
            .where(RolloutDecision.rollout_id == rid)
            .order_by(RolloutDecision.seq.desc())
        ).first()
        retargets = s.scalars(
            select(RolloutCommand).where(RolloutCommand.rollout_id == rid, RolloutCommand.kind == "retarget")
        ).all()
    assert last.action == "rollback" and last.actor == "alice"
    assert {c.device_id for c in retargets} == canary and all(c.sent_at is None for c in retargets)  # not due
    assert set(ids) >= canary
