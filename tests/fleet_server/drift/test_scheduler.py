"""The periodic evaluator thread and snapshot retention."""

from __future__ import annotations

import datetime as dt
import time

from drift_support import NOW, Fleet, make_baseline, provision_devices, register_release
from sqlalchemy import func, select

from fleet_server.db import DriftSnapshot
from fleet_server.drift import DriftScheduler, evaluate_all
from fleet_server.drift.evaluator import prune_snapshots
from fleet_server.settings import Settings

BASELINE = make_baseline()


def test_scheduler_runs_evaluations_until_stopped(session_factory, settings: Settings) -> None:
    with session_factory() as s:
        register_release(s, settings.artifact_dir, BASELINE)
        provision_devices(s, ["mcu-0"])
        fleet = Fleet(BASELINE)
        # Windows in the last hour of the real clock: the scheduler evaluates "now".
        fleet.add(["mcu-0"], shift=0.6, start_s=int(time.time()) - 3600, count=4)
        fleet.store(s)
        s.commit()
    scheduler = DriftScheduler(session_factory, settings.model_copy(update={"drift_eval_interval_s": 0.05}))
    scheduler.start()
    deadline = time.monotonic() + 30
    while scheduler.runs < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    scheduler.stop()
    runs = scheduler.runs
    assert runs >= 2 and scheduler.last_error is None
    assert {g.status for g in scheduler.last_summary.groups} == {"significant"}
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(DriftSnapshot)) >= 2 * 2  # all + hw class, per run
    time.sleep(0.2)
    assert scheduler.runs == runs  # stopped


def test_scheduler_survives_a_failing_evaluation(tmp_path) -> None:
    from fleet_server.db import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{tmp_path / 'unmigrated.db'}")  # no tables: every run fails
    try:
        scheduler = DriftScheduler(make_session_factory(engine), Settings(data_dir=tmp_path))
        assert scheduler.run_once() is None and "OperationalError" in scheduler.last_error
        assert scheduler.run_once() is None and scheduler.runs == 2
    finally:
        engine.dispose()


def test_old_snapshots_are_pruned(session_factory, settings: Settings) -> None:
    with session_factory() as s:
        register_release(s, settings.artifact_dir, BASELINE)
        provision_devices(s, ["mcu-0"])
        fleet = Fleet(BASELINE)
        fleet.add(["mcu-0"])
        fleet.store(s)
        s.commit()
        evaluate_all(s, settings, NOW)
        n = s.scalar(select(func.count()).select_from(DriftSnapshot))
        assert n > 0
        later = NOW + dt.timedelta(days=settings.drift_snapshot_retention_days, seconds=1)
        assert prune_snapshots(s, settings, later) == n
        s.commit()
        assert s.scalar(select(func.count()).select_from(DriftSnapshot)) == 0
