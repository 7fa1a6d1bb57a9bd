"""A minimal agent process for the MQTT tests: buffer + publisher + command intake + link, real paho.

Prints one line per event on stdout (``queued <seq>``, ``cmd <cmd_id>``, ``drained``, ``final {json}``)
so the test can kill it at a known point. SIGTERM stops it gracefully; SIGKILL is the crash case.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mqtt_support import status, window

from device_agent.commands import CommandIntake
from device_agent.disk_buffer import BufferSettings, DiskBuffer
from device_agent.mqtt_link import MqttLink, MqttSettings
from device_agent.publisher import TelemetryPublisher


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--buffer", type=Path, required=True)
    ap.add_argument("--start-seq", type=int, default=0)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--keepalive", type=int, default=5)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    out_lock = threading.Lock()

    def say(line: str) -> None:
        with out_lock:
            print(line, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    buf = DiskBuffer(args.buffer, BufferSettings(fsync=False))
    intake = CommandIntake(args.device, seen_path=args.buffer / "seen-commands.json")
    intake.register("cmd.ping", lambda c: say(f"cmd {c.cmd_id}"))
    link = MqttLink(
        MqttSettings(device_id=args.device, port=args.port, keepalive_s=args.keepalive,
                     reconnect_min_s=0.05, reconnect_max_s=0.5, inflight_window=8),
        buf,
        lambda: status(args.device),
        intake=intake,
        extra_status=lambda: {"buffer_dropped": buf.stats().dropped_records},
    )
    pub = TelemetryPublisher(args.device, buf)
    link.start()
    for seq in range(args.start_seq, args.start_seq + args.count):
        if stop.is_set():
            break
        pub.publish(window(args.device, seq))
        say(f"queued {seq}")
        if args.interval:
            time.sleep(args.interval)
    while not stop.is_set():
        if link.wait_drained(0.2):
            say("drained")
            stop.wait(0.5)
    link.stop()
    say("final " + json.dumps({"link": link.counters.as_dict(), "commands": intake.counters.as_dict(),
                               "buffer": buf.stats().__repr__()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
