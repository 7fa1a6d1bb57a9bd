"""Helpers for the rollout-runner tests: releases, devices and telemetry windows in a real DB, and fake
devices (plain paho clients) that record the commands they receive and answer them with telemetry."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Iterable
from typing import Any

import paho.mqtt.client as mqtt
from release_rows import MODEL, add_release  # noqa: F401  (tests/support; re-exported to the runner tests)
from sqlalchemy import Engine, insert

from fleet_server.db import Device, TelemetryWindow
from fleet_server.ingest.store import update_device_battery, window_row
from fleet_server.rollout_runner.command_builder import CommandBuilder
from telemetry.device_codec import decode_command
from telemetry.schemas import MetricsWindow, ModelRef
from telemetry.topics import cmd_topic


def builder(retarget_delay_s: float = 120.0) -> CommandBuilder:
    """Update commands come from the releases module's real ``update_available``."""
    return CommandBuilder(base_url="http://127.0.0.1:8080", retarget_delay_s=retarget_delay_s)


def add_devices(
    engine: Engine,
    n: int,
    *,
    counter: int | None,
    prefix: str = "dev",
    hardware_class: str = "esp32-s3",
    tags: dict[str, str] | None = None,
) -> list[str]:
    ids = [f"{prefix}-{i:05d}" for i in range(n)]
    rows = [
        {
            "id": d,
            "hardware_class": hardware_class,
            "tags": tags or {},
            "mqtt_password_hash": "x",
            "created_at": dt.datetime.now(dt.UTC),
            "updated_at": dt.datetime.now(dt.UTC),
            "current_model": MODEL if counter is not None else None,
            "current_version": str(counter) if counter is not None else None,
        }
        for d in ids
    ]
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(insert(Device), rows[i : i + 5000])
    return ids


def window(
    device_id: str,
    seq: int,
    start: int,
    counter: int,
    *,
    inferences: int = 500,
    fps: int = 2,
    battery: float | None = 80.0,
    charging: bool = False,
    fallback: int = 0,
    hist: list[int] | None = None,
    p95: int = 2000,
) -> MetricsWindow:
    positives = max(fps, inferences // 50)
    return MetricsWindow(
        device_id=device_id,
        seq=seq,
        window_start_s=start,
        window_len_s=300,
        duty_cycle=0.1,
        battery_pct=battery,
        charging=charging,
        inferences=inferences,
        positives=positives,
        false_positives=fps,
        latency_p50_us=p95 // 2,
        latency_p95_us=p95,
        latency_max_us=p95 * 2,
        model=ModelRef(name=MODEL, version=counter, variant="full_int8"),
        fallback_level=fallback,
        input_hist=hist or [],
    )


def store_windows(engine: Engine, windows: Iterable[MetricsWindow]) -> None:
    now = dt.datetime.now(dt.UTC)
    rows = [window_row(w, now) for w in windows]
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(insert(TelemetryWindow), rows[i : i + 5000])
        update_device_battery(conn, rows)  # as the ingest worker does with each batch


class FakeDevices:
    """N plain paho clients subscribed to their own command topics; records (device_id, message)."""

    def __init__(self, host: str, port: int, device_ids: list[str]) -> None:
        self.received: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"fake-{random.randrange(10**9)}"
        )
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.connect(host, port)
        self.client.loop_start()
        # One client subscribed to each device's command topic stands for the N devices (one connection
        # per device would only cost the test time; the topics are the devices' own).
        self.client.subscribe([(cmd_topic(d), 1) for d in device_ids])
        assert self._subscribed.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device_id = msg.topic.split("/")[2]
        message = decode_command(msg.payload, device_id=device_id)  # what the agent decodes with
        with self._lock:
            self.received.append((device_id, message))

    def snapshot(self) -> list[tuple[str, Any]]:
        with self._lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[tuple[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.snapshot()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        return self.snapshot()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class SimClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FleetSim:
    """Devices that do what the commands say (as an agent would report it through ingest): an update sets
    the running counter and an OTA 'committed' status, a rollback reverts to the previous counter; every
    step each device reports one window on what it runs, with the FP rate of that counter."""

    def __init__(
        self, engine: Engine, ids: list[str], counter: int, fp_per_1000: dict[int, int], prev: int = 1
    ) -> None:
        self.engine = engine
        self.running = dict.fromkeys(ids, counter)
        self.seq = dict.fromkeys(ids, 0)
        self.fp = fp_per_1000
        self.prev = prev
        self.applied = 0

    def apply(self, received: list[tuple[str, Any]], now: float) -> None:
        from fleet_server.db import OtaStatusReport

        updates: dict[str, int] = {}
        ota = []
        for device_id, cmd in received[self.applied :]:
            if cmd.type == "cmd.update":
                updates[device_id] = cmd.target_version
                ota.append(
                    {
                        "device_id": device_id,
                        "ts": int(now),
                        "release_id": cmd.release_id,
                        "target_version": cmd.target_version,
                        "from_version": self.running[device_id],
                        "state": "committed",
                        "via_delta": False,
                        "bytes_done": 1,
                        "bytes_total": 1,
                        "attempt": 1,
                        "cmd_id": cmd.cmd_id,
                        "digest": cmd.cmd_id[-32:],
                    }
                )
            elif cmd.type == "cmd.rollback":
                updates[device_id] = self.prev
        self.applied = len(received)
        self.running.update(updates)
        with self.engine.begin() as conn:
            if ota:
                conn.execute(insert(OtaStatusReport), ota)
            for device_id, counter in updates.items():
                conn.execute(
                    Device.__table__.update()
                    .where(Device.id == device_id)
                    .values(current_version=str(counter))
                )

    def report(self, now: float, inferences: int = 4000) -> None:
        windows = []
        for device_id, counter in self.running.items():
            self.seq[device_id] += 1
            windows.append(
                window(
                    device_id,
                    self.seq[device_id],
                    int(now),
                    counter,
                    inferences=inferences,
                    fps=inferences * self.fp[counter] // 1000,
                )
            )
        store_windows(self.engine, windows)
