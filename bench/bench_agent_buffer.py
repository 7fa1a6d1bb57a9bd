"""Benchmark: replay of 1,000 metrics windows buffered during a broker outage vs publishing with the
broker up, through the real agent path (TelemetryPublisher -> DiskBuffer -> MqttLink -> Mosquitto ->
a subscriber), plus bytes per window message in JSON and CBOR.

    .venv/bin/python bench/bench_agent_buffer.py            # Rich tables
    .venv/bin/python bench/bench_agent_buffer.py --json     # machine-readable

Uses a private mosquitto (tests/support/mosquitto_broker.py) on a free loopback port with persistence,
so the subscriber's session survives the outage and every window can be counted. Target: all 1,000
arrive, in order, lost == 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
sys.path.insert(0, str(ROOT / "tests" / "device_agent"))

import cbor2  # noqa: E402
from _mqtt_support import analyse, status, window  # noqa: E402
from mosquitto_broker import MosquittoBroker, MqttCollector  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from device_agent.disk_buffer import SEGMENT_MAGIC, BufferSettings, DiskBuffer, encode_record  # noqa: E402
from device_agent.mqtt_link import MqttLink, MqttSettings  # noqa: E402
from device_agent.publisher import TelemetryPublisher  # noqa: E402
from telemetry.codec import encode  # noqa: E402
from telemetry.schemas import MetricsWindow, ShadowFigures  # noqa: E402
from telemetry.topics import telemetry_topic  # noqa: E402

N = 1000


@dataclass
class Run:
    scenario: str
    fsync: bool
    window: int
    sent: int
    received: int
    lost: int
    duplicates: int
    in_order: bool
    append_s: float  # time to queue all N into the disk buffer
    connect_s: float  # outage runs: broker start -> CONNACK
    deliver_s: float  # first publish possible -> subscriber has all N (baseline: from first append)
    msgs_per_s: float


def one_run(tmp: Path, *, outage: bool, fsync: bool, inflight: int, progress: Progress) -> Run:
    dev = f"bench-{'out' if outage else 'up'}-{int(fsync)}-{inflight}"
    broker = MosquittoBroker(tmp / f"broker-{dev}", persistence=True)
    broker.start()
    topic = telemetry_topic(dev)
    MqttCollector(broker.host, broker.port, [topic], client_id=f"col-{dev}").close()  # persistent session
    buf = DiskBuffer(tmp / f"buf-{dev}",
                     BufferSettings(fsync=fsync, max_bytes=64 << 20, segment_bytes=1 << 20))
    settings = MqttSettings(device_id=dev, port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2,
                            inflight_window=inflight, poll_s=0.02)
    link = MqttLink(settings, buf, lambda: status(dev))
    pub = TelemetryPublisher(dev, buf)
    windows = [window(dev, s) for s in range(N)]
    col: MqttCollector | None = None
    label = f"{'outage' if outage else 'broker up'} fsync={fsync} window={inflight}"
    task = progress.add_task(label, total=N)
    try:
        if outage:
            broker.stop()
        else:
            col = MqttCollector(broker.host, broker.port, [topic], client_id=f"col-{dev}")
        link.start()
        if not outage:
            link.wait_connected(10)
        t0 = time.perf_counter()
        for w in windows:
            pub.publish(w)
        append_s = time.perf_counter() - t0
        connect_s = 0.0
        if outage:
            assert not link.connected and buf.stats().pending == N
            t_start = time.perf_counter()
            broker.start()
            link.wait_connected(30)
            connect_s = time.perf_counter() - t_start
            t0 = time.perf_counter()
            col = MqttCollector(broker.host, broker.port, [topic], client_id=f"col-{dev}")
        assert col is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            got = len(col.snapshot())
            progress.update(task, completed=min(got, N))
            if got >= N and buf.stats().pending == 0:
                break
            time.sleep(0.005)
        deliver_s = time.perf_counter() - t0
        rep = analyse([m.payload for m in col.snapshot()], range(N))
        return Run("outage replay" if outage else "broker up (baseline)", fsync, inflight, N, rep.received,
                   len(rep.lost), rep.duplicates, rep.in_order, append_s, connect_s, deliver_s, N / deliver_s)
    finally:
        link.stop()
        if col is not None:
            col.close()
        buf.close()
        broker.stop()
        progress.remove_task(task)


def message_sizes() -> list[dict[str, object]]:
    dev = "3f2a9c1e-5b7d-4e21-9a0c-7d1e2f3a4b5c"  # a UUID-long device id: the worst realistic case
    base = window(dev, 123_456)
    full16 = MetricsWindow.model_validate({
        **base.model_dump(),
        "input_hist": [70, 200, 900, 3000, 8000, 15000, 20000, 22000, 20000, 15000, 8000, 3000, 900, 200,
                       70, 10],
        "output_hist": [90000, 5000, 2000, 1000, 600, 400, 300, 200, 150, 100, 80, 60, 40, 30, 20, 10],
        "inferences": 200_000, "positives": 1200,
    })
    shadow = MetricsWindow.model_validate({
        **full16.model_dump(),
        "shadow": ShadowFigures(candidate_version=4, samples=20000, agreements=19870, candidate_positives=130,
                                candidate_false_positives=9, candidate_latency_p50_us=7000,
                                candidate_latency_p95_us=9100).model_dump(),
    })
    rows = []
    cases = (("10+10 bins", base), ("16+16 bins, large counts", full16), ("16+16 bins + shadow", shadow))
    for name, w in cases:
        j, c = encode(w, "json"), encode(w, "cbor")
        assert cbor2.loads(c)[3] == w.seq
        rec = len(encode_record(0, telemetry_topic(dev), c))
        rows.append({"window": name, "json_bytes": len(j), "cbor_bytes": len(c), "buffer_record_bytes": rec,
                     "cbor_fits_256": len(c) <= 256})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    ap.add_argument("--quick", action="store_true", help="only the default window (16) with fsync on")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    console = Console(stderr=args.json, width=150)
    plan = [(False, True, 16), (True, True, 16)]
    if not args.quick:
        plan += [(False, False, 16), (True, False, 16), (True, True, 1), (True, True, 64)]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as d, Progress(console=console, transient=True) as progress:
        for outage, fsync, inflight in plan:
            runs.append(one_run(Path(d), outage=outage, fsync=fsync, inflight=inflight, progress=progress))
    sizes = message_sizes()
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "n": N,
              "segment_magic_bytes": len(SEGMENT_MAGIC), "runs": [asdict(r) for r in runs], "sizes": sizes}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    t = Table(title=f"{N} metrics windows through the agent's buffer and MQTT link (real Mosquitto)")
    for col in ("scenario", "fsync", "window", "received", "lost", "dup", "in order", "append s", "connect s",
                "deliver s", "msg/s"):
        t.add_column(col, justify="right" if col not in ("scenario",) else "left")
    for r in runs:
        t.add_row(r.scenario, str(r.fsync), str(r.window), str(r.received), str(r.lost), str(r.duplicates),
                  str(r.in_order), f"{r.append_s:.3f}", f"{r.connect_s:.3f}", f"{r.deliver_s:.3f}",
                  f"{r.msgs_per_s:.0f}")
    console.print(t)
    s = Table(title="bytes per window message")
    for col in ("window", "JSON", "CBOR", "buffer record (CBOR)", "CBOR <= 256"):
        s.add_column(col)
    for row in sizes:
        s.add_row(str(row["window"]), str(row["json_bytes"]), str(row["cbor_bytes"]),
                  str(row["buffer_record_bytes"]), str(row["cbor_fits_256"]))
    console.print(s)
    ok = all(r.lost == 0 and r.in_order and r.received >= N for r in runs)
    console.print("[green]all windows arrived, in order[/]" if ok else "[red]LOSS OR REORDER[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
