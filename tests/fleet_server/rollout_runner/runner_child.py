"""A rollout runner as a separate process, for the crash and leader tests (run by them, not by pytest).

    python runner_child.py DB_URL HOST PORT LOCK_KEY MODE NOW

MODE: ``crash_after_commit`` (SIGKILL itself once the first rollout's transaction committed, before the
outbox is published), ``crash_after_publish`` (SIGKILL after the broker acknowledged the outbox, before
the rows are marked sent), ``tick`` (one full tick, then exit), ``serve`` (tick every 0.2 s forever and
print ``LEADING <pid>`` when it starts leading).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "support"))  # release_rows, for runner_support

from runner_support import builder

from fleet_server.db import make_engine
from fleet_server.rollout_runner.baselines import BaselineCache
from fleet_server.rollout_runner.leader import LeaderLock
from fleet_server.rollout_runner.publisher import BrokerAddress, MqttCommandPublisher
from fleet_server.rollout_runner.runner import RolloutRunner


def _die(*_args: object) -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class CrashAfterPublish(MqttCommandPublisher):
    def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> list[bool]:
        acked = super().publish_many(messages)
        print(f"PUBLISHED {sum(acked)}", flush=True)
        _die()
        return acked


def main() -> None:
    db_url, host, port, key, mode, now = sys.argv[1:7]
    engine = make_engine(db_url)
    cls = CrashAfterPublish if mode == "crash_after_publish" else MqttCommandPublisher
    runner = RolloutRunner(
        engine=engine,
        builder=builder(),
        publisher=cls(BrokerAddress(host, int(port)), timeout_s=10),
        baselines=BaselineCache(Path("/nonexistent")),
        leader=LeaderLock(engine, int(key)),
        now=lambda: float(now),
        after_commit=_die if mode == "crash_after_commit" else None,
    )
    if mode == "serve":
        leading = False
        while True:
            report = runner.tick()
            if report.leading and not leading:
                print(f"LEADING {os.getpid()} {time.time():.3f}", flush=True)
            leading = report.leading
            time.sleep(0.2)
    report = runner.tick()
    print(
        f"TICK decisions={report.decisions} commands={report.commands} sent={report.drained.sent}", flush=True
    )


if __name__ == "__main__":
    main()
