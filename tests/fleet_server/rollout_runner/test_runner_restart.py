"""Restart safety and leadership with real runner processes killed by SIGKILL.

* Killed between commit and publish: the restarted runner publishes the outbox, each cmd_id exactly once;
  killed between publish and marking sent: the next runner republishes the same cmd_ids (agents drop the
  duplicates). Either way every cohort device got exactly one update cmd_id, none was forgotten, and the
  rollout resumes from its stored state.
* Two runners on one PostgreSQL: exactly one leads; SIGKILL the leader and the other takes over within a
  bounded time (the figure is printed; bench/RESULTS-rollout-db.md records it).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from runner_support import FakeDevices, add_devices, add_release
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))
from mosquitto_broker import SYSTEM_BROKER, port_open

from fleet_server.db import RolloutCommand, RolloutRow, make_engine, make_session_factory
from fleet_server.rollout_runner import service
from fleet_server.rollouts.model import ControlPlan, TargetFilter

CHILD = Path(__file__).resolve().parent / "runner_child.py"
ROOT = Path(__file__).resolve().parents[3]
T0 = 1_800_000_000.0


def _child(db_url: str, mode: str, key: int, now: float = T0 + 10) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    host, port = SYSTEM_BROKER
    return subprocess.Popen(
        [sys.executable, str(CHILD), db_url, host, str(port), str(key), mode, str(now)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture
def setup(db_url: str) -> Iterator[dict]:
    if not port_open(*SYSTEM_BROKER):
        pytest.skip("no MQTT broker on 127.0.0.1:1883")
    engine = make_engine(db_url)
    ids = add_devices(engine, 40, counter=1, prefix=f"rs{random.randrange(10**6):06d}")
    with make_session_factory(engine)() as s:
        add_release(s, 1)
        add_release(s, 2)
        row = service.create_rollout(
            s,
            service.CreateRequest(
                release_id="kws-2", target=TargetFilter(), min_soak_s=0, control=ControlPlan(min_devices=10)
            ),
            actor="test",
            now=T0,
        )
        s.commit()
    devices = FakeDevices(*SYSTEM_BROKER, ids)
    yield {
        "engine": engine,
        "url": db_url,
        "rid": row.id,
        "devices": devices,
        "key": random.randrange(1, 2**62),
    }
    devices.close()
    engine.dispose()


def _outbox(engine, rid: str) -> list[RolloutCommand]:
    with make_session_factory(engine)() as s:
        return list(s.scalars(select(RolloutCommand).where(RolloutCommand.rollout_id == rid)))


def _run(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


@pytest.mark.slow
def test_kill_between_commit_and_publish_then_between_publish_and_mark(setup: dict) -> None:
    engine, rid, devices, key, url = (
        setup["engine"],
        setup["rid"],
        setup["devices"],
        setup["key"],
        setup["url"],
    )
    # 1. Killed right after the decision's commit: outbox written, nothing published.
    code, out = _run(_child(url, "crash_after_commit", key))
    assert code == -signal.SIGKILL, out
    rows = _outbox(engine, rid)
    assert rows and all(r.sent_at is None for r in rows) and {r.kind for r in rows} == {"update"}
    time.sleep(0.5)
    assert devices.snapshot() == []
    with make_session_factory(engine)() as s:
        state = service.state_of(s.get(RolloutRow, rid))
    assert sorted(state.exposed) == sorted(r.device_id for r in rows)  # the stored state says who

    # 2. The next runner publishes the outbox (each cmd_id once) and dies before marking the rows sent.
    code, out = _run(_child(url, "crash_after_publish", key, now=T0 + 20))
    assert code == -signal.SIGKILL and f"PUBLISHED {len(rows)}" in out, out
    got = devices.wait_for(len(rows))
    assert Counter(m.cmd_id for _, m in got) == Counter({r.cmd_id: 1 for r in rows})
    assert all(r.sent_at is None for r in _outbox(engine, rid))

    # 3. A healthy runner republishes the same cmd_ids (at least once), marks them sent, resumes the rollout.
    code, out = _run(_child(url, "tick", key, now=T0 + 30))
    assert code == 0, out
    after = _outbox(engine, rid)
    by_device: dict[str, set[str]] = defaultdict(set)
    for d, m in devices.wait_for(2 * len(rows)):
        by_device[d].add(m.cmd_id)
    first_cmds = {r.device_id: r.cmd_id for r in rows}
    assert all(r.sent_at is not None for r in after)
    # No device commanded twice with different cmd_ids, none forgotten.
    update_rows = Counter(r.device_id for r in after if r.kind == "update")
    assert set(update_rows.values()) == {1}
    for device_id, cmd_id in first_cmds.items():
        assert by_device[device_id] == {cmd_id}
    with make_session_factory(engine)() as s:
        state = service.state_of(s.get(RolloutRow, rid))
    assert set(state.exposed) == set(update_rows)
    assert state.status == "running" and state.decision_seq >= 2


@pytest.mark.slow
def test_restarted_runner_publishes_exactly_once(setup: dict) -> None:
    engine, rid, devices, key, url = (
        setup["engine"],
        setup["rid"],
        setup["devices"],
        setup["key"],
        setup["url"],
    )
    code, out = _run(_child(url, "crash_after_commit", key))
    assert code == -signal.SIGKILL, out
    rows = _outbox(engine, rid)
    code, out = _run(_child(url, "tick", key, now=T0 + 20))
    assert code == 0, out
    got = devices.wait_for(len(rows))
    time.sleep(0.5)  # anything extra would have arrived by now
    assert Counter(m.cmd_id for _, m in devices.snapshot()) == Counter({r.cmd_id: 1 for r in rows})
    assert {d for d, _ in got} == {r.device_id for r in rows}


@pytest.mark.slow
def test_one_leader_and_takeover_after_sigkill(setup: dict) -> None:
    if not setup["url"].startswith("postgresql"):
        pytest.skip("leader election is PostgreSQL's advisory lock; SQLite runs one process")
    url, key = setup["url"], setup["key"]
    lines: dict[int, list[str]] = {}

    def reader(proc: subprocess.Popen) -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.setdefault(proc.pid, []).append(line.strip())

    def leading(proc: subprocess.Popen) -> bool:
        return any(line.startswith("LEADING") for line in lines.get(proc.pid, []))

    def wait(pred, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.02)
        return False

    a = _child(url, "serve", key)
    threading.Thread(target=reader, args=(a,), daemon=True).start()
    b = None
    try:
        assert wait(lambda: leading(a), 30), "first runner never led"
        b = _child(url, "serve", key)
        threading.Thread(target=reader, args=(b,), daemon=True).start()
        time.sleep(3.0)  # b ticks ~15 times meanwhile
        assert not leading(b), "two runners lead at once"
        killed = time.monotonic()
        a.send_signal(signal.SIGKILL)
        assert wait(lambda: leading(b), 30), "no takeover within 30 s"
        takeover = time.monotonic() - killed
        print(f"leader takeover after SIGKILL: {takeover:.2f} s")
        assert takeover < 30
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)
