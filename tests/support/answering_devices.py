"""Simulated devices that answer rollout commands the way an agent reports them, one MQTT connection each.

Each device: its own paho client (persistent session, ``clean_session=False``, so commands published
while it or the broker is away are delivered later), subscribed to its own command topic; a metrics window
every ``report_s`` on the release counter it runs; on ``cmd.update`` an ``OtaStatus`` committed and a
``Status`` with the new counter (no download or install: the agent's own tests cover that). Every
command id received is recorded per device, so a test can tell "updated twice" from "delivered twice".
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import paho.mqtt.client as mqtt

from telemetry.codec import encode
from telemetry.device_codec import decode_command
from telemetry.schemas import MetricsWindow, ModelRef, OtaStatus, Status
from telemetry.topics import cmd_topic, ota_topic, status_topic, telemetry_topic


class AnsweringDevices:
    def __init__(
        self, ids: list[str], host: str, port: int, *, model: str, counter: int = 1, report_s: float = 1.0
    ) -> None:
        self.model = model
        self.report_s = report_s
        self.running = dict.fromkeys(ids, counter)
        self.received: dict[str, list[str]] = defaultdict(list)  # device -> cmd_ids, in arrival order
        self._lock = threading.Lock()
        self._seq = dict.fromkeys(ids, 0)
        self._stop = threading.Event()
        self._subscribed = threading.Semaphore(0)
        self.clients: dict[str, mqtt.Client] = {}
        for d in ids:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=d, clean_session=False, userdata=d)
            c.on_connect = lambda c, dev, *_a: c.subscribe(cmd_topic(dev), qos=1)
            c.on_subscribe = lambda *_a: self._subscribed.release()
            c.on_message = self._on_message
            c.reconnect_delay_set(0.1, 1.0)
            c.connect_async(host, port, keepalive=10)
            c.loop_start()
            self.clients[d] = c
        for _ in ids:
            if not self._subscribed.acquire(timeout=60):
                raise RuntimeError("devices did not subscribe")
        self._thread = threading.Thread(target=self._report, daemon=True)
        self._thread.start()

    def _status(self, c: mqtt.Client, device_id: str, counter: int) -> None:
        msg = Status(
            device_id=device_id,
            ts=int(time.time()),
            uptime_s=1,
            hardware_class="esp32-s3",
            agent_version="sim",
            model=ModelRef(name=self.model, version=counter, variant="full_int8"),
        )
        c.publish(status_topic(device_id), encode(msg), qos=1)

    def _on_message(self, c: mqtt.Client, device_id: str, m: mqtt.MQTTMessage) -> None:
        cmd = decode_command(m.payload, device_id=device_id)
        with self._lock:
            self.received[device_id].append(cmd.cmd_id)
            first = self.received[device_id].count(cmd.cmd_id) == 1
        if cmd.type != "cmd.update" or not first:
            return
        with self._lock:
            self.running[device_id] = cmd.target_version
        ota = OtaStatus(
            device_id=device_id,
            ts=int(time.time()),
            release_id=cmd.release_id,
            target_version=cmd.target_version,
            state="committed",
            cmd_id=cmd.cmd_id,
        )
        c.publish(ota_topic(device_id), encode(ota), qos=1)
        self._status(c, device_id, cmd.target_version)

    def _report(self) -> None:
        while not self._stop.wait(self.report_s):
            for d, c in self.clients.items():
                with self._lock:
                    counter = self.running[d]
                    self._seq[d] += 1
                    seq = self._seq[d]
                w = MetricsWindow(
                    device_id=d,
                    seq=seq,
                    window_start_s=int(time.time()),
                    window_len_s=60,
                    duty_cycle=0.1,
                    battery_pct=80.0,
                    inferences=4000,
                    positives=200,
                    false_positives=20,
                    latency_p50_us=900,
                    latency_p95_us=1800,
                    latency_max_us=3000,
                    model=ModelRef(name=self.model, version=counter, variant="full_int8"),
                )
                c.publish(telemetry_topic(d), encode(w), qos=1)

    def distinct_commands(self) -> dict[str, set[str]]:
        with self._lock:
            return {d: set(ids) for d, ids in self.received.items()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self.clients.values():
            c.disconnect()
        for c in self.clients.values():
            c.loop_stop()
