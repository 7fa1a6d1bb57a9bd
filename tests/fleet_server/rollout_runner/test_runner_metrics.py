"""Rollout states on GET /metrics: the runner's tick updates gauges and counters on the API's Prometheus
registry (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from runner_support import add_devices, add_release, builder

from fleet_server.api.app import create_app
from fleet_server.db import make_engine, make_session_factory
from fleet_server.rollout_runner import service
from fleet_server.rollout_runner.baselines import BaselineCache
from fleet_server.rollout_runner.leader import LeaderLock
from fleet_server.rollout_runner.metrics import RolloutMetrics
from fleet_server.rollout_runner.runner import RolloutRunner
from fleet_server.rollouts.model import StagePlan
from fleet_server.settings import Settings

NOW = 1_800_000_000.0


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _start(engine, actor: str) -> str:
    with make_session_factory(engine)() as s:
        row = service.create_rollout(
            s,
            service.CreateRequest(
                release_id="kws-2",
                stages=[
                    StagePlan(name="canary", fraction=0.1, min_devices=3, min_soak_s=600),
                    StagePlan(name="100%", fraction=1.0, min_devices=3, min_soak_s=600),
                ],
            ),
            actor=actor,
            now=NOW,
        )
        s.commit()
        return row.id


def test_tick_updates_rollout_states_and_decision_counters(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    registry = CollectorRegistry()
    metrics = RolloutMetrics.on(registry)
    assert RolloutMetrics.on(registry) is metrics  # once per registry
    try:
        add_devices(engine, 30, counter=1)
        with make_session_factory(engine)() as s:
            add_release(s, 1)
            add_release(s, 2)
            s.commit()
        # Before any tick every status shows, at 0.
        assert _value(registry, "tinyfleet_rollouts", status="running") == 0
        assert _value(registry, "tinyfleet_rollouts", status="rolled_back") == 0
        runner = RolloutRunner(
            engine=engine,
            builder=builder(),
            publisher=None,
            baselines=BaselineCache(tmp_path),
            leader=LeaderLock(engine, random.randrange(1, 2**62)),
            now=lambda: NOW + 60,
            metrics=metrics,
        )
        first = _start(engine, "ops")
        report = runner.tick()
        assert report.leading and report.errors == 0
        assert _value(registry, "tinyfleet_rollouts", status="running") == 1
        assert _value(registry, "tinyfleet_rollouts_unfinished") == 1
        assert _value(registry, "tinyfleet_rollout_runner_leading") == 1
        assert _value(registry, "tinyfleet_rollout_runner_last_tick_seconds") > 0
        # The first tick holds (nothing reported, soak not over) and commands the canary.
        assert _value(registry, "tinyfleet_rollout_decisions_total", action="hold") == 1
        assert _value(registry, "tinyfleet_rollout_commands_total", kind="update") == report.commands > 0

        with make_session_factory(engine)() as s:
            service.apply_action(s, first, "pause", actor="ops", now=NOW + 90, builder=None)
            s.commit()
        runner.tick()
        assert _value(registry, "tinyfleet_rollouts", status="running") == 0
        assert _value(registry, "tinyfleet_rollouts", status="paused") == 1
        with make_session_factory(engine)() as s:
            service.apply_action(s, first, "rollback", actor="ops", now=NOW + 120, builder=builder())
            s.commit()
        runner.tick()
        assert _value(registry, "tinyfleet_rollouts", status="paused") == 0
        assert _value(registry, "tinyfleet_rollouts", status="rolled_back") == 1
        # The operator's decisions are not the runner's: only what a tick decided is counted.
        assert _value(registry, "tinyfleet_rollout_decisions_total", action="rollback") is None
        runner.leader.release()
    finally:
        engine.dispose()


def test_metrics_route_shows_rollout_states(db_url: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        device_credential_iterations=1000,
        rollout_runner_enabled=True,
        rollout_tick_s=0.2,
        rollout_lock_key=random.randrange(1, 2**62),
        mqtt_port=1,  # no broker: the outbox stays unsent, which is not what this test is about
        rollout_publish_timeout_s=0.5,
        drift_scheduler_enabled=False,
    )
    app = create_app(settings)
    try:
        with make_session_factory(app.state.engine)() as s:
            add_release(s, 1)
            add_release(s, 2)
            s.commit()
        add_devices(app.state.engine, 10, counter=1)
        _start(app.state.engine, "ops")
        with TestClient(app) as client:
            text = ""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                text = client.get("/metrics").text
                if 'tinyfleet_rollouts{status="running"} 1.0' in text:
                    break
                time.sleep(0.1)
            assert 'tinyfleet_rollouts{status="running"} 1.0' in text, text[-2000:]
            assert 'tinyfleet_rollouts{status="aborted"} 0.0' in text
            assert "tinyfleet_rollout_runner_leading 1.0" in text
    finally:
        app.state.engine.dispose()
