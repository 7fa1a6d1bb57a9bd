"""Ingest benchmark: agent-format windows over real Mosquitto into PostgreSQL, next to raw paho pipes.

    .venv/bin/python bench/bench_ingest.py [--messages 20000] [--devices 200] [--write-results FILE]

One window per message (telemetry.codec CBOR, as the agent sends them), QoS 1, published by a separate
publisher process with a bounded in-flight window (``max_inflight_messages_set`` + a semaphore released
in ``on_publish``), to a private Mosquitto on a free port. Measured in the same run, in this order:

1. raw QoS 0 pipe: a paho subscriber process that only counts (what the machine can move at all);
2. raw QoS 1 pipe: the same with QoS 1 on both sides (paho acks automatically);
3. ingest, 1 worker: ``tinyfleet ingest run`` as a child process (shared subscription, manual ack
   after commit) -> rows committed in PostgreSQL, checked to equal the messages sent (zero loss);
4. ingest, 2 workers in one shared-subscription group: each worker's share and the CPU split.

Rates are messages / (first publish -> last message received, or last row committed). CPU seconds
per process come from /proc (utime+stime, PostgreSQL = every ``postgres`` process on the machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "support")]

import paho.mqtt.client as mqtt  # noqa: E402
from mosquitto_broker import MosquittoBroker  # noqa: E402
from postgres import postgres_reachable, postgres_schema_url  # noqa: E402
from process_harness import IngestProcess  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
INFLIGHT = 50
PAHO_BOUND = True


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def postgres_cpu() -> float:
    total = 0.0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(p.name))
            except OSError:
                continue
    return total


# ----------------------------------------------------------------------------- child processes


def publisher(host: str, port: int, messages: list[tuple[str, bytes]], qos: int, go: Any, done: Any) -> None:
    """Publish everything at ``qos``; at most INFLIGHT unacknowledged (QoS 1) at any time."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(INFLIGHT if PAHO_BOUND else 0)
    sem = threading.BoundedSemaphore(INFLIGHT)
    acked = [0]
    client.on_publish = lambda *a: (qos and sem.release(), acked.__setitem__(0, acked[0] + 1))
    client.connect(host, port, keepalive=60)
    client.loop_start()
    go.wait()
    for topic, payload in messages:
        if qos:
            sem.acquire()
        client.publish(topic, payload, qos=qos)
    deadline = time.monotonic() + 120
    while acked[0] < len(messages) and time.monotonic() < deadline:
        time.sleep(0.005)
    done.set()
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


def raw_subscriber(host: str, port: int, qos: int, received: Any, ready: Any, last: Any) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-raw-{os.getpid()}")

    def on_message(*_: Any) -> None:
        received.value += 1  # single writer: no lock needed
        last.value = time.monotonic()

    client.on_message = on_message
    client.on_subscribe = lambda *a: ready.set()
    client.on_connect = lambda c, *a: c.subscribe("tinyfleet/v1/+/telemetry", qos=qos)
    client.connect(host, port, keepalive=60)
    client.loop_forever()


# ----------------------------------------------------------------------------- runs


def run_raw(broker: MosquittoBroker, messages: list[tuple[str, bytes]], qos: int) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    received, last = ctx.Value("q", 0, lock=False), ctx.Value("d", 0.0, lock=False)
    ready, go, done = ctx.Event(), ctx.Event(), ctx.Event()
    sub = ctx.Process(target=raw_subscriber, args=(broker.host, broker.port, qos, received, ready, last))
    sub.start()
    ready.wait(30)
    pub = ctx.Process(target=publisher, args=(broker.host, broker.port, messages, qos, go, done))
    pub.start()
    time.sleep(0.5)
    pids = {"subscriber": sub.pid, "publisher": pub.pid, "broker": broker._proc.pid}  # type: ignore[union-attr]
    cpu0 = {k: cpu_seconds(v) for k, v in pids.items() if v}
    t0 = time.monotonic()
    go.set()
    done.wait(180)
    deadline = time.monotonic() + 10
    while received.value < len(messages) and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = (last.value or time.monotonic()) - t0
    cpu = {k: round(cpu_seconds(v) - cpu0[k], 2) for k, v in pids.items() if v}
    pub.join(10)
    sub.kill()
    sub.join()
    n = received.value
    return {
        "sent": len(messages),
        "received": n,
        "seconds": round(elapsed, 3),
        "rate": round(n / elapsed),
        "cpu_s": cpu,
    }


def run_ingest(
    db_url: str,
    engine: Any,
    broker: MosquittoBroker,
    messages: list[tuple[str, bytes]],
    workers: int,
    tag: str,
) -> dict[str, Any]:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("TRUNCATE telemetry_windows, dead_letters"))
    group = f"bench-{tag}"
    procs = [
        IngestProcess(
            db_url,
            broker.host,
            broker.port,
            client_id=f"ingest-{tag}-{i}",
            batch_size=1000,  # the CLI's default
            extra_args=["--group", group],
        ).start()
        for i in range(workers)
    ]
    ctx = mp.get_context("fork")
    go, done = ctx.Event(), ctx.Event()
    pub = ctx.Process(target=publisher, args=(broker.host, broker.port, messages, 1, go, done))
    pub.start()
    time.sleep(0.5)
    pids = {f"worker{i + 1}": p.pid for i, p in enumerate(procs)}
    pids |= {"publisher": pub.pid, "broker": broker._proc.pid}  # type: ignore[union-attr]
    cpu0 = {k: cpu_seconds(v) for k, v in pids.items() if v}
    pg0 = postgres_cpu()
    t0 = time.monotonic()
    go.set()
    n = 0
    deadline = time.monotonic() + 300
    with engine.connect() as conn:
        while n < len(messages) and time.monotonic() < deadline:
            time.sleep(0.02)
            n = conn.execute(text("SELECT count(*) FROM telemetry_windows")).scalar_one()
            conn.commit()
    elapsed = time.monotonic() - t0
    cpu = {k: round(cpu_seconds(v) - cpu0[k], 2) for k, v in pids.items() if v}
    cpu["postgres"] = round(postgres_cpu() - pg0, 2)
    pub.join(30)
    stats = [p.terminate() for p in procs]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM telemetry_windows")).scalar_one()
        dead = conn.execute(text("SELECT count(*) FROM dead_letters")).scalar_one()
    acked = [s["acked"] for s in stats]
    return {
        "workers": workers,
        "sent": len(messages),
        "rows": rows,
        "dead_letters": dead,
        "lost": len(messages) - rows,
        "seconds": round(elapsed, 3),
        "rate": round(rows / elapsed),
        "share": [round(a / max(1, sum(acked)), 3) for a in acked],
        "acked": acked,
        "batches": [s["batches"] for s in stats],
        "cpu_s": cpu,
    }


def build_messages(n: int, devices: int) -> list[tuple[str, bytes]]:
    sys.path.insert(0, str(ROOT / "tests" / "fleet_server" / "ingest"))
    from ingest_support import cbor_window

    from telemetry.topics import telemetry_topic

    ids = [f"bench-{i:05d}" for i in range(devices)]
    return [
        (telemetry_topic(ids[i % devices]), cbor_window(ids[i % devices], i // devices)) for i in range(n)
    ]


def provision(engine: Any, devices: int) -> None:
    from fleet_server.auth import hash_device_secret
    from fleet_server.db import Device, make_session_factory

    pw = hash_device_secret("bench", iterations=1000)  # the worker never checks it; the broker would
    with make_session_factory(engine)() as s:
        s.add_all(
            Device(id=f"bench-{i:05d}", hardware_class="esp32-s3", tags={}, mqtt_password_hash=pw)
            for i in range(devices)
        )
        s.commit()


NOTES = """\
## What mattered (measured while building the worker on this machine, 20,000-window runs)

- **Publisher in-flight bound.** paho re-scans its whole out-message dict on every PUBACK when
  `max_inflight_messages_set(n)` is in force: with n = 500 the raw QoS 1 pipe ran at ~7,000 msg/s
  (publisher CPU-bound), with n = 50 at ~10,800 msg/s. The bench uses 50 (paho's bound plus a
  semaphore released in `on_publish`).
- **Batch insert on PostgreSQL.** SQLAlchemy's insertmanyvalues sends one multi-row VALUES statement
  (31 placeholders per window); psycopg re-parses that long query text with a regex on every batch:
  ~560 us per window, 5x the rest of ingest together (first run: 1 worker 1,850 msg/s). One
  `INSERT ... SELECT FROM unnest(<one array per column>) ON CONFLICT DO NOTHING RETURNING id` with
  binary (`%b`) array parameters: ~65 us per window including PostgreSQL's own work. One JSON text
  parameter through `json_populate_recordset` was measured too: no faster end to end (the parsing
  moves into PostgreSQL, on the same 2 cores).
- **Overlapping commit and decode.** A writer thread commits batch k while the MQTT side decodes k+1
  (a hand-over queue of one batch = back-pressure): -25 % wall time on a 20,000-message backlog.
- **Receive Maximum.** With manual acks the broker has at most Receive Maximum (MQTT 5 CONNECT property)
  unacked messages in flight to a worker; it is 2 x batch size, or batches would never fill and every
  commit would wait for the timer (Mosquitto's v3.1.1 default is 20).
- **Where a worker's time goes now** (cProfile, per window): CBOR decode + pydantic validation
  ~45-65 us (telemetry.wire's foreign-item scan alone ~27 us), array parameters ~35 us, paho receive
  ~30 us, one socketpair wake-up per `client.ack()` ~19 us (paho has no batched ack), row building
  ~8 us: ~150-180 us of CPU per window. On 2 shared cores the worker, PostgreSQL, the broker and the
  publisher compete, so the 10,000 msg/s target for one worker is NOT met here (see the table).
- **Two workers** split the shared subscription evenly (Mosquitto round-robin: 50 % / 50 %), but on
  2 cores already busy with publisher, broker, PostgreSQL and other people's jobs the sum is bounded
  by CPU (see the CPU column): the second worker only helps when a core is free.
"""


def render(res: dict[str, Any], args: argparse.Namespace) -> str:
    raw1, raw0 = res["raw_qos1"]["rate"], res["raw_qos0"]["rate"]
    lines = [
        "# Ingest benchmark results",
        "",
        f"- Date: {res['date']}",
        f"- Command: `{res['command']}`",
        f"- Machine: {res['machine']}; {os.cpu_count()} cores SHARED with other engineers' TensorFlow jobs "
        f"(load average at start {res['load_at_start']}): absolute rates are depressed and noisy, the "
        "ratios to the raw pipes of the same run are the meaningful figures.",
        f"- Workload: {args.messages} agent-format metrics windows (CBOR, {res['payload_bytes']} bytes each) "
        f"from {args.devices} devices, one window per message, QoS 1, publisher in-flight window "
        f"{INFLIGHT}; PostgreSQL on 127.0.0.1 (private schema), Mosquitto 2.0 on a free port.",
        "",
        "| pipeline | msg/s | vs raw QoS 1 | messages | lost | share per worker | CPU s (process) |",
        "|:--|--:|--:|--:|--:|:--|:--|",
    ]
    for key, name in (
        ("raw_qos0", "raw paho pipe, QoS 0 (no work)"),
        ("raw_qos1", "raw paho pipe, QoS 1 (no work)"),
        ("ingest_1", "ingest -> PostgreSQL, 1 worker"),
        ("ingest_2", "ingest -> PostgreSQL, 2 workers"),
    ):
        r = res[key]
        got = r.get("rows", r.get("received"))
        share = " / ".join(f"{s:.0%}" for s in r.get("share", [])) or "-"
        cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_s"].items())
        lines.append(
            f"| {name} | {r['rate']:,} | {r['rate'] / raw1:.2f}x | {got} | {r['sent'] - got} | "
            f"{share} | {cpu} |"
        )
    lines += [
        "",
        f"Targets (issue 5): 1 worker >= 10,000 msg/s and >= 0.65x raw QoS 1 "
        f"(here {res['ingest_1']['rate'] / raw1:.2f}x); 2 workers each 40-60 % and together >= 1 worker "
        f"(here {res['ingest_2']['rate'] / max(1, res['ingest_1']['rate']):.2f}x of 1 worker). "
        f"Raw QoS 0 / QoS 1 here: {raw0:,} / {raw1:,} msg/s.",
        "",
    ]
    return "\n".join(lines) + "\n" + NOTES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--write-results", type=Path, default=None)
    args = ap.parse_args()
    if not postgres_reachable():
        raise SystemExit("PostgreSQL does not answer on 127.0.0.1:5432")
    from fleet_server.db import make_engine
    from fleet_server.db.migrate import upgrade_to_head

    messages = build_messages(args.messages, args.devices)
    res: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/bench_ingest.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "load_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "payload_bytes": len(messages[0][1]),
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        MosquittoBroker(Path(tmp) / "broker") as broker,
        postgres_schema_url("tf_bench") as db_url,
    ):
        engine = make_engine(db_url)
        upgrade_to_head(engine)
        provision(engine, args.devices)
        for key, fn in (
            ("raw_qos0", lambda: run_raw(broker, messages, 0)),
            ("raw_qos1", lambda: run_raw(broker, messages, 1)),
            ("ingest_1", lambda: run_ingest(db_url, engine, broker, messages, 1, "one")),
            ("ingest_2", lambda: run_ingest(db_url, engine, broker, messages, 2, "two")),
        ):
            print(f"running {key} ...", file=sys.stderr, flush=True)
            res[key] = fn()
            print(json.dumps({key: res[key]}), flush=True)
        engine.dispose()
    text_out = render(res, args)
    print(text_out)
    if args.write_results:
        args.write_results.write_text(text_out)


if __name__ == "__main__":
    main()
