"""The rollout runner as a real child process (wall clock, MQTT publisher, advisory-lock leader), for
fault tests and benchmarks that SIGKILL it mid-rollout. Run as a script by :class:`RunnerProcess`.

    python rollout_runner_process.py DB_URL MQTT_HOST MQTT_PORT LOCK_KEY TICK_S
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]


class RunnerProcess:
    def __init__(self, db_url: str, host: str, port: int, *, lock_key: int, tick_s: float = 0.3) -> None:
        self.args = [db_url, host, str(port), str(lock_key), str(tick_s)]
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> RunnerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), *self.args], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        ready = threading.Event()
        out = self.proc.stdout

        def read() -> None:
            for line in out:
                if line.startswith("READY"):
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout):
            self.kill()
            raise RuntimeError("rollout runner process did not start")
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def main() -> None:
    sys.path.insert(0, str(REPO))
    from fleet_server.db import make_engine
    from fleet_server.rollout_runner.baselines import BaselineCache
    from fleet_server.rollout_runner.command_builder import CommandBuilder
    from fleet_server.rollout_runner.leader import LeaderLock
    from fleet_server.rollout_runner.publisher import BrokerAddress, MqttCommandPublisher
    from fleet_server.rollout_runner.runner import RolloutRunner

    db_url, host, port, key, tick = sys.argv[1:6]
    engine = make_engine(db_url)
    runner = RolloutRunner(
        engine=engine,
        builder=CommandBuilder(base_url="http://fleet.example:8080", retarget_delay_s=120),
        publisher=MqttCommandPublisher(BrokerAddress(host, int(port)), timeout_s=5),
        baselines=BaselineCache(Path("/nonexistent")),
        leader=LeaderLock(engine, int(key)),
        tick_s=float(tick),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("READY", flush=True)
    runner.run(stop)


if __name__ == "__main__":
    main()
