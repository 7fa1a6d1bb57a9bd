"""A complete staged rollout on 1,000 simulated devices, each with its own MQTT connection, zero soak.

    .venv/bin/python bench/bench_scale_rollout.py [--sizes 100,1000] [--report 5] [--tick 0.5]
                                                  [--write-results bench/RESULTS-scale.md]

Real: PostgreSQL (own schema), a private Mosquitto, the ingest worker as a child process
(``fleet_server.cli.ingest_commands ingest run``), the rollout runner (H3's ``RolloutRunner`` with its MQTT
command publisher, outbox and advisory-lock leader) as a child process. Simulated: the devices, as paho
clients -- one connection, one persistent session and one command subscription each, spread over
``--procs`` processes -- that publish a metrics window every ``--report`` seconds on the model they run and
answer ``cmd.update`` like an agent reports it (``OtaStatus`` committed + ``Status`` with the new counter;
no download, no flash, no health check: the agent benchmarks measure those).

The rollout: canary 5 % -> 25 % -> 100 %, every stage ``min_soak_s=0``, control group 5 %, a good release
(same false-positive rate as the previous one), commands not rate-limited. Measured per fleet size: time
from creating the rollout to status ``completed`` and to the last targeted device reporting the new
version in the database; windows stored per second while it ran; CPU seconds and peak RSS of the ingest
worker, the runner and Mosquitto. The smallest size is the baseline of the same run (FleetML's published
target: 100 devices in < 2 min; issue 7's: 1,000 devices in <= 2 min with zero soak).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

MODEL = "kws"
FP_PER_1000 = 5  # both releases: a good candidate


# ----------------------------------------------------------------------------------- device processes


def run_devices(port: int, ids: list[str], report_s: float) -> None:
    """One process of simulated devices; prints 'ready' once all subscribed, counts as JSON on SIGTERM."""
    import paho.mqtt.client as mqtt

    from telemetry.codec import encode
    from telemetry.device_codec import decode_command
    from telemetry.schemas import MetricsWindow, ModelRef, OtaStatus, Status
    from telemetry.topics import cmd_topic, ota_topic, status_topic, telemetry_topic

    running = dict.fromkeys(ids, 1)
    seq = dict.fromkeys(ids, 0)
    counts = {"updates": 0, "windows": 0, "duplicate_updates": 0}
    seen_cmds: set[str] = set()
    lock = threading.Lock()
    subscribed = threading.Semaphore(0)
    clients: dict[str, mqtt.Client] = {}

    def status(c: mqtt.Client, device_id: str, counter: int) -> None:
        msg = Status(
            device_id=device_id,
            ts=int(time.time()),
            uptime_s=1,
            hardware_class="esp32-s3",
            agent_version="sim",
            model=ModelRef(name=MODEL, version=counter, variant="full_int8"),
        )
        c.publish(status_topic(device_id), encode(msg), qos=1)

    def on_message(c: mqtt.Client, device_id: str, m: mqtt.MQTTMessage) -> None:
        cmd = decode_command(m.payload, device_id=device_id)
        if cmd.type != "cmd.update":
            return
        with lock:
            if cmd.cmd_id in seen_cmds:
                counts["duplicate_updates"] += 1
                return
            seen_cmds.add(cmd.cmd_id)
            counts["updates"] += 1
            running[device_id] = cmd.target_version
        ota = OtaStatus(
            device_id=device_id,
            ts=int(time.time()),
            release_id=cmd.release_id,
            target_version=cmd.target_version,
            state="committed",
            cmd_id=cmd.cmd_id,
        )
        c.publish(ota_topic(device_id), encode(ota), qos=1)
        status(c, device_id, cmd.target_version)

    for device_id in ids:
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, clean_session=False, userdata=device_id
        )
        c.on_message = on_message
        c.on_subscribe = lambda *_a: subscribed.release()
        c.on_connect = lambda c, dev, *_a: c.subscribe(cmd_topic(dev), qos=1)
        c.reconnect_delay_set(0.5, 5)
        c.connect_async("127.0.0.1", port, keepalive=60)
        c.loop_start()
        clients[device_id] = c
    for _ in ids:
        if not subscribed.acquire(timeout=120):
            raise SystemExit("devices did not all subscribe")
    for device_id, c in clients.items():
        status(c, device_id, 1)
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rng = random.Random(len(ids))
    stop.wait(rng.uniform(0, report_s))  # devices' windows spread over the period
    while not stop.is_set():
        started = time.monotonic()
        for device_id, c in clients.items():
            with lock:
                counter = running[device_id]
            seq[device_id] += 1
            n = 4000
            w = MetricsWindow(
                device_id=device_id,
                seq=seq[device_id],
                window_start_s=int(time.time()),
                window_len_s=60,
                duty_cycle=0.1,
                battery_pct=80.0,
                inferences=n,
                positives=200,
                false_positives=n * FP_PER_1000 // 1000,
                latency_p50_us=900,
                latency_p95_us=1800,
                latency_max_us=3000,
                model=ModelRef(name=MODEL, version=counter, variant="full_int8"),
            )
            c.publish(telemetry_topic(device_id), encode(w), qos=1)
            counts["windows"] += 1
        stop.wait(max(0.0, report_s - (time.monotonic() - started)))
    print(json.dumps(counts), flush=True)
    # No per-client loop_stop(): each waits out its thread's 1 s select, 250 s for 250 clients. The
    # broker sees the connections drop; the counts are out.
    os._exit(0)


# ----------------------------------------------------------------------------------- runner process


def run_runner(db_url: str, port: int, tick: float, artifacts: Path) -> None:
    from fleet_server.db import make_engine
    from fleet_server.rollout_runner.baselines import BaselineCache
    from fleet_server.rollout_runner.command_builder import CommandBuilder
    from fleet_server.rollout_runner.leader import LeaderLock
    from fleet_server.rollout_runner.publisher import BrokerAddress, MqttCommandPublisher
    from fleet_server.rollout_runner.runner import RolloutRunner

    engine = make_engine(db_url)
    runner = RolloutRunner(
        engine=engine,
        builder=CommandBuilder(base_url="http://fleet.example:8080", retarget_delay_s=120),
        publisher=MqttCommandPublisher(BrokerAddress("127.0.0.1", port)),
        baselines=BaselineCache(artifacts),
        leader=LeaderLock(engine, random.randrange(2**62)),
        tick_s=tick,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    runner.run(stop)
    runner.leader.release()


# ----------------------------------------------------------------------------------- orchestration


def _child(args: list[str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True, **kw
    )


def _wait_ready(proc: subprocess.Popen[str], what: str, timeout: float = 180) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.strip() == "ready":
            return
        if not line and proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
    raise SystemExit(f"{what} not ready within {timeout}s")


class Sampler:
    """CPU seconds and peak RSS of a few processes, sampled every 0.5 s from /proc."""

    def __init__(self, pids: dict[str, int]) -> None:
        from process_harness import process_cpu_rss

        self._read = process_cpu_rss
        self.pids = pids
        self.start_cpu = {k: self._safe(p)[0] for k, p in pids.items()}
        self.last_cpu = dict(self.start_cpu)
        self.peak_rss = {k: self._safe(p)[1] for k, p in pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _safe(self, pid: int) -> tuple[float, int]:
        try:
            return self._read(pid)
        except OSError:
            return 0.0, 0

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for k, pid in self.pids.items():
                cpu, rss = self._safe(pid)
                if cpu:
                    self.last_cpu[k] = cpu
                self.peak_rss[k] = max(self.peak_rss[k], rss)

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._thread.join()
        return {
            k: {
                "cpu_s": round(self.last_cpu[k] - self.start_cpu[k], 2),
                "peak_rss_mb": round(self.peak_rss[k] / 2**20, 1),
            }
            for k in self.pids
        }


def run_size(n: int, procs: int, report_s: float, tick: float, timeout: float) -> dict[str, Any]:
    from bench_rollout_recovery import setup_db  # H3's fixture: devices on release 1, releases 1 and 2
    from mosquitto_broker import MosquittoBroker
    from postgres import postgres_schema_url
    from process_harness import IngestProcess
    from sqlalchemy import func, select

    from fleet_server.db import Device, RolloutRow, TelemetryWindow, make_session_factory
    from fleet_server.rollout_runner import service
    from fleet_server.rollouts.model import ControlPlan, SchedulePlan, StagePlan

    with (
        tempfile.TemporaryDirectory() as tmp,
        MosquittoBroker(Path(tmp) / "mq", extra_config=["max_keepalive 120"]) as broker,
        postgres_schema_url("tf_scale") as url,
    ):
        engine, ids = setup_db(url, n)
        ingest = IngestProcess(
            url, broker.host, broker.port, client_id="scale-ingest", batch_size=500
        ).start()
        runner = _child(
            ["--runner", "--db-url", url, "--port", str(broker.port), "--tick", str(tick), "--artifacts", tmp]
        )
        _wait_ready(runner, "runner")
        per = (n + procs - 1) // procs
        devices = [
            _child(
                [
                    "--devices",
                    ",".join(ids[i : i + per]),
                    "--port",
                    str(broker.port),
                    "--report",
                    str(report_s),
                ]
            )
            for i in range(0, n, per)
        ]
        connect_started = time.monotonic()
        for d in devices:
            _wait_ready(d, "device process")
        connect_s = time.monotonic() - connect_started
        assert broker._proc is not None and ingest.pid is not None
        sampler = Sampler(
            {"ingest worker": ingest.pid, "rollout runner": runner.pid, "mosquitto": broker._proc.pid}
        )
        windows_before = _count(engine, select(func.count()).select_from(TelemetryWindow))
        t0 = time.time()
        with make_session_factory(engine)() as s:
            row = service.create_rollout(
                s,
                service.CreateRequest(
                    release_id=f"{MODEL}-2",
                    stages=[
                        StagePlan(name="canary", fraction=0.05, min_devices=5, min_soak_s=0),
                        StagePlan(name="25%", fraction=0.25, min_devices=5, min_soak_s=0),
                        StagePlan(name="100%", fraction=1.0, min_devices=5, min_soak_s=0),
                    ],
                    control=ControlPlan(fraction=0.05, min_devices=5),
                    schedule=SchedulePlan(devices_per_minute=1_000_000),
                ),
                actor="bench",
                now=t0,
            )
            s.commit()
        t_done = t_all_reported = None
        status, exposed = "running", n
        try:
            while time.time() - t0 < timeout:
                with engine.connect() as conn:
                    status, state = conn.execute(
                        select(RolloutRow.status, RolloutRow.state).where(RolloutRow.id == row.id)
                    ).one()
                    on_new = conn.execute(
                        select(func.count()).select_from(Device).where(Device.current_version == "2")
                    ).scalar_one()
                if status != "running" and t_done is None:
                    t_done = time.time()
                    exposed = len(state.get("exposed", []))
                if t_done is not None and on_new >= exposed:
                    t_all_reported = time.time()
                    break
                time.sleep(0.2)
            elapsed = time.time() - t0
            windows = _count(engine, select(func.count()).select_from(TelemetryWindow)) - windows_before
            usage = sampler.stop()
        finally:
            device_counts = []
            for p in devices:
                p.send_signal(signal.SIGTERM)
            for p in devices:
                try:
                    out = p.communicate(timeout=60)[0] or ""
                    device_counts.append(json.loads(out.strip().splitlines()[-1]))
                except (subprocess.TimeoutExpired, ValueError, IndexError):
                    p.kill()
                    p.communicate()
            runner.send_signal(signal.SIGTERM)
            try:
                runner.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.communicate()
            ingest_stats = ingest.terminate()
            engine.dispose()
    return {
        "devices": n,
        "status": status,
        "exposed": exposed,
        "connect_s": round(connect_s, 1),
        "time_to_completed_s": None if t_done is None else round(t_done - t0, 1),
        "time_to_all_reported_s": None if t_all_reported is None else round(t_all_reported - t0, 1),
        "windows_per_s": round(windows / elapsed, 1),
        "updates": sum(c.get("updates", 0) for c in device_counts),
        "duplicate_updates": sum(c.get("duplicate_updates", 0) for c in device_counts),
        "ingest": ingest_stats,
        "usage": usage,
    }


def _count(engine: Any, stmt: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def write_results(path: Path, rows: list[dict[str, Any]], command: str) -> None:
    lines = [
        "",
        "## Staged rollout at scale (bench/bench_scale_rollout.py)",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; command: `{command}`; {platform.machine()}, "
        f"{os.cpu_count()} cores shared with other jobs, Python {platform.python_version()}.",
        "- Devices simulated as paho clients (own connection + session each), updates answered without "
        "a real install; real ingest worker and rollout runner processes, PostgreSQL, Mosquitto. Zero soak.",
        "",
        "| devices | connect s | rollout completed s | exposed devices on new version s | windows/s | "
        "updates (dup) | ingest CPU s / RSS MB | runner CPU s / RSS MB | mosquitto CPU s / RSS MB |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        u = r["usage"]
        lines.append(
            f"| {r['devices']} | {r['connect_s']} | {r['time_to_completed_s']} ({r['status']}) | "
            f"{r['time_to_all_reported_s']} | {r['windows_per_s']} | "
            f"{r['updates']} ({r['duplicate_updates']}) | "
            + " | ".join(
                f"{u[k]['cpu_s']} / {u[k]['peak_rss_mb']}"
                for k in ("ingest worker", "rollout runner", "mosquitto")
            )
            + " |"
        )
    lines.append("")
    if not path.exists():
        lines.insert(0, "# Scale benchmark results")
    with path.open("a") as fh:
        fh.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000", help="Fleet sizes; the first is the baseline.")
    ap.add_argument("--procs", type=int, default=4, help="Device processes.")
    ap.add_argument("--report", type=float, default=5.0, help="Seconds between a device's windows.")
    ap.add_argument("--tick", type=float, default=0.5, help="Runner tick (s).")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--write-results", type=Path)
    # child modes
    ap.add_argument("--devices", help=argparse.SUPPRESS)
    ap.add_argument("--runner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--db-url", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--artifacts", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.devices:
        run_devices(args.port, args.devices.split(","), args.report)
        return
    if args.runner:
        run_runner(args.db_url, args.port, args.tick, args.artifacts)
        return
    from postgres import postgres_reachable

    if not postgres_reachable():
        raise SystemExit("PostgreSQL does not answer on 127.0.0.1:5432")
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        print(f"{n} devices ...", flush=True)
        r = run_size(n, args.procs, args.report, args.tick, args.timeout)
        print(json.dumps(r), flush=True)
        rows.append(r)
    if args.write_results:
        write_results(
            args.write_results, rows, "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
        )


if __name__ == "__main__":
    main()
