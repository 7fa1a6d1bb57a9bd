"""Time to recovery: from the hard-gate rollback decision to every exposed device reporting the previous
version, through the real pieces except the device agents.

Real: a private Mosquitto, PostgreSQL (own schema), the ingest worker (shared subscription), the rollout
runner thread (wall clock, ``--tick`` seconds) with its MQTT publisher and outbox. Simulated: the devices,
as one paho client subscribed to every device's command topic that answers like an agent would report
(a ``Status`` with the running model; on ``cmd.update`` an ``OtaStatus`` committed + the candidate, on
``cmd.rollback`` the previous counter; no download, flash or health check: an agent's own revert takes
what the agent benchmarks measure on top). Every device also publishes one metrics window per
``--report`` seconds on what it runs; the candidate has 3 % false positives against 0.5 % on the previous
release, so the false-positive gate stops the rollout at its first stage.

Measured, next to the runner's own tick interval (the baseline any recovery waits for at least once):

* rollback decision -> the last exposed device's ``current_version`` back in the DB (polled every 20 ms);
* rollback decision -> the runner's recorded ``time_to_recovery_s`` (tick granularity).

    .venv/bin/python bench/bench_rollout_recovery.py [--devices 400] [--tick 0.5] [--write-results FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy import insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from mosquitto_broker import MosquittoBroker  # noqa: E402
from postgres import postgres_reachable, postgres_schema_url  # noqa: E402
from release_rows import add_release  # noqa: E402

from fleet_server.db import (  # noqa: E402
    Device,
    RolloutRow,
    make_engine,
    make_session_factory,
)
from fleet_server.db.migrate import upgrade_to_head  # noqa: E402
from fleet_server.ingest.config import IngestConfig  # noqa: E402
from fleet_server.ingest.worker import BrokerAddress as IngestBroker  # noqa: E402
from fleet_server.ingest.worker import IngestWorker  # noqa: E402
from fleet_server.rollout_runner import service  # noqa: E402
from fleet_server.rollout_runner.baselines import BaselineCache  # noqa: E402
from fleet_server.rollout_runner.command_builder import CommandBuilder  # noqa: E402
from fleet_server.rollout_runner.leader import LeaderLock  # noqa: E402
from fleet_server.rollout_runner.publisher import BrokerAddress, MqttCommandPublisher  # noqa: E402
from fleet_server.rollout_runner.runner import RolloutRunner  # noqa: E402
from fleet_server.rollouts.model import ControlPlan, StagePlan  # noqa: E402
from telemetry.codec import encode  # noqa: E402
from telemetry.device_codec import decode_command  # noqa: E402
from telemetry.schemas import MetricsWindow, ModelRef, OtaStatus, Status  # noqa: E402
from telemetry.topics import cmd_topic, ota_topic, status_topic, telemetry_topic  # noqa: E402

MODEL = "kws"
FP_PER_1000 = {1: 5, 2: 30}


class FakeFleet:
    def __init__(self, host: str, port: int, ids: list[str]) -> None:
        self.running = dict.fromkeys(ids, 1)
        self.seq = dict.fromkeys(ids, 0)
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-fleet")
        self.client.max_inflight_messages_set(200)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        self.client.subscribe([(cmd_topic(d), 1) for d in ids])

    def _status(self, device_id: str, counter: int) -> None:
        msg = Status(
            device_id=device_id,
            ts=int(time.time()),
            uptime_s=1,
            hardware_class="esp32-s3",
            agent_version="sim",
            model=ModelRef(name=MODEL, version=counter, variant="full_int8"),
        )
        self.client.publish(status_topic(device_id), encode(msg), qos=1)

    def _on_message(self, _c: Any, _u: Any, m: mqtt.MQTTMessage) -> None:
        device_id = m.topic.split("/")[2]
        cmd = decode_command(m.payload, device_id=device_id)
        if cmd.type == "cmd.update":
            ota = OtaStatus(
                device_id=device_id,
                ts=int(time.time()),
                release_id=cmd.release_id,
                target_version=cmd.target_version,
                state="committed",
                cmd_id=cmd.cmd_id,
            )
            self.client.publish(ota_topic(device_id), encode(ota), qos=1)
            with self.lock:
                self.running[device_id] = cmd.target_version
            self._status(device_id, cmd.target_version)
        elif cmd.type == "cmd.rollback":
            with self.lock:
                self.running[device_id] = 1
            self._status(device_id, 1)

    def report(self) -> None:
        now = int(time.time())
        with self.lock:
            items = list(self.running.items())
        for device_id, counter in items:
            self.seq[device_id] += 1
            n = 4000
            w = MetricsWindow(
                device_id=device_id,
                seq=self.seq[device_id],
                window_start_s=now,
                window_len_s=60,
                duty_cycle=0.1,
                inferences=n,
                positives=200,
                false_positives=n * FP_PER_1000[counter] // 1000,
                latency_p50_us=900,
                latency_p95_us=1800,
                latency_max_us=3000,
                model=ModelRef(name=MODEL, version=counter, variant="full_int8"),
            )
            self.client.publish(telemetry_topic(device_id), encode(w), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def setup_db(url: str, n: int) -> tuple[Any, list[str]]:
    engine = make_engine(url)
    upgrade_to_head(engine)
    ids = [f"rec-{i:05d}" for i in range(n)]
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(Device),
            [
                {
                    "id": d,
                    "hardware_class": "esp32-s3",
                    "tags": {},
                    "mqtt_password_hash": "x",
                    "created_at": now,
                    "updated_at": now,
                    "current_model": MODEL,
                    "current_version": "1",
                }
                for d in ids
            ],
        )
    with make_session_factory(engine)() as s:
        for counter in (1, 2):
            add_release(s, counter, model=MODEL)
        s.commit()
    return engine, ids


def run(n: int, tick: float, report_every: float) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        MosquittoBroker(Path(tmp) / "mq") as broker,
        postgres_schema_url("tf_bench") as url,
    ):
        engine, ids = setup_db(url, n)
        worker = IngestWorker(
            engine,
            IngestBroker(broker.host, broker.port),
            IngestConfig(client_id="bench-ingest", batch_size=500, batch_delay_s=0.02),
        )
        worker.start()
        assert worker.wait_subscribed(15)
        fleet = FakeFleet(broker.host, broker.port, ids)
        publisher = MqttCommandPublisher(BrokerAddress(broker.host, broker.port))
        runner = RolloutRunner(
            engine=engine,
            builder=CommandBuilder(base_url="http://fleet.example:8080", retarget_delay_s=120),
            publisher=publisher,
            baselines=BaselineCache(Path(tmp)),
            leader=LeaderLock(engine, random.randrange(2**62)),
            tick_s=tick,
        )
        with make_session_factory(engine)() as s:
            row = service.create_rollout(
                s,
                service.CreateRequest(
                    release_id=f"{MODEL}-2",
                    stages=[
                        StagePlan(
                            name="canary",
                            fraction=0.25,
                            min_devices=5,
                            min_soak_s=3600,
                            min_reporting_devices=5,
                        ),
                        StagePlan(name="100%", fraction=1.0, min_devices=5, min_soak_s=3600),
                    ],
                    control=ControlPlan(fraction=0.05, min_devices=20),
                ),
                actor="bench",
                now=time.time(),
            )
            s.commit()
            rid = row.id
        runner.start()
        t_rollback = None
        exposed: list[str] = []
        deadline = time.monotonic() + 120
        next_report = 0.0
        try:
            while time.monotonic() < deadline:
                if time.monotonic() >= next_report:
                    fleet.report()
                    next_report = time.monotonic() + report_every
                with engine.connect() as conn:
                    r = conn.execute(select(RolloutRow.status, RolloutRow.state)).one()
                if r.status == "rolled_back":
                    t_rollback = r.state["rolled_back_at"]
                    exposed = r.state["exposed"]
                    break
                time.sleep(0.02)
            assert t_rollback is not None, "the bad release was not rolled back within 120 s"
            t_db = None
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    versions = dict(
                        conn.execute(
                            select(Device.id, Device.current_version).where(Device.id.in_(exposed))
                        ).all()
                    )
                if all(v == "1" for v in versions.values()):
                    t_db = time.time()
                    break
                time.sleep(0.02)
            t_runner = None
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    summary = conn.execute(select(RolloutRow.summary)).scalar()
                if summary.get("time_to_recovery_s") is not None:
                    t_runner = summary["time_to_recovery_s"]
                    break
                time.sleep(0.05)
        finally:
            runner.stop()
            worker.stop()
            fleet.close()
            runner.leader.release()
            engine.dispose()
    return {
        "devices": n,
        "exposed": len(exposed),
        "tick_s": tick,
        "report_every_s": report_every,
        "rollout": rid,
        "recovery_db_s": None if t_db is None else round(t_db - t_rollback, 3),
        "recovery_runner_s": None if t_runner is None else round(t_runner, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=400)
    ap.add_argument("--tick", type=float, default=0.5)
    ap.add_argument("--report", type=float, default=1.0)
    ap.add_argument("--write-results", type=Path, help="append the figures to this Markdown file")
    args = ap.parse_args()
    if not postgres_reachable():
        raise SystemExit("PostgreSQL does not answer on 127.0.0.1:5432")
    r = run(args.devices, args.tick, args.report)
    print(r)
    if args.write_results:
        with args.write_results.open("a") as f:
            f.write(
                f"""
## Time to recovery (simulated device replies)

- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; command: `python {" ".join(sys.argv)}`;
  {platform.machine()}, Python {platform.python_version()}, PostgreSQL + private Mosquitto on 127.0.0.1.
- What: {r["devices"]} devices, a bad release (3 % vs 0.5 % false positives) stopped at its first stage by
  the false-positive gate; {r["exposed"]} devices exposed. Real ingest worker, runner thread (tick
  {r["tick_s"]} s), MQTT publisher + outbox; devices simulated by one paho client that reports a
  ``Status`` with the previous counter as soon as it gets ``cmd.rollback`` (no agent, no slot switch).

| what | s |
|:--|--:|
| baseline: the runner's tick interval | {r["tick_s"]} |
| rollback decision -> every exposed device's version back in the DB | {r["recovery_db_s"]} |
| rollback decision -> the runner records the recovery (`time_to_recovery_s`) | {r["recovery_runner_s"]} |

Target (chapter, immediate tier): < 60 s. A real agent adds its own revert (slot switch + model load,
see bench/RESULTS-agent*.md) on top of the figures above.
"""
            )


if __name__ == "__main__":
    main()
