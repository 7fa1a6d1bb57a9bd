"""A small fleet of device-side telemetry stacks for fault-injection tests and benchmarks.

Each device is the agent's own delivery path -- ``DiskBuffer`` + ``TelemetryPublisher`` + ``MqttLink``
(QoS 1, persistent session, in-order replay, backoff with jitter) -- without the inference loop, so a
test can run tens of devices in one process and produce windows at a known rate. What was *sent* is what
the publisher durably queued (its seq); what was *stored* is read back from ``telemetry_windows``; the
difference, per device and per seq, is *lost*.

Import with ``tests/support`` on ``sys.path``: ``from device_fleet import DeviceFleet, count_windows``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, func, select

from device_agent.disk_buffer import BufferSettings, DiskBuffer
from device_agent.mqtt_link import MqttLink, MqttSettings
from device_agent.publisher import TelemetryPublisher
from fleet_server.db import TelemetryWindow, make_session_factory
from fleet_server.db.device_store import provision
from telemetry.schemas import MetricsWindow, ModelRef, Status

T0 = 1_795_000_000


def metrics_window(device_id: str, seq: int, *, model_name: str = "kws-yesno") -> MetricsWindow:
    return MetricsWindow(
        device_id=device_id,
        seq=seq,
        window_start_s=T0 + 60 * seq,
        window_len_s=60,
        duty_cycle=0.05,
        battery_pct=80.0,
        battery_mv=3900,
        inferences=600 + seq % 13,
        positives=7,
        false_positives=seq % 3,
        latency_p50_us=8_000,
        latency_p95_us=9_500,
        latency_max_us=14_000,
        model=ModelRef(name=model_name, version=3, variant="full_int8"),
        input_hist=[3, 10, 40, 90, 150, 150, 90, 40, 10, 3],
        output_hist=[500, 60, 20, 10, 5, 2, 1, 1, 0, 1],
    )


def provision_devices(engine: Engine, ids: Iterable[str], iterations: int = 1000) -> dict[str, str]:
    """Provision through the real device store; return id -> secret."""
    out: dict[str, str] = {}
    with make_session_factory(engine)() as s:
        for device_id in ids:
            p = provision(
                s, device_id=device_id, hardware_class="esp32-s3", tags={}, max_tags=8, iterations=iterations
            )
            out[device_id] = p.secret
        s.commit()
    return out


def count_windows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(TelemetryWindow)).scalar_one())


def stored_seqs(engine: Engine) -> dict[str, list[int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(TelemetryWindow.device_id, TelemetryWindow.seq).order_by(
                TelemetryWindow.device_id, TelemetryWindow.id
            )
        ).all()
    out: dict[str, list[int]] = {}
    for device_id, seq in rows:
        out.setdefault(device_id, []).append(int(seq))
    return out


@dataclass
class FaultCounts:
    """The figures every fault test prints (one JSON line) and RELIABILITY.md quotes."""

    fault: str
    sent: int = 0
    stored: int = 0
    lost: int = 0
    duplicates_stored: int = 0
    bricked: int = 0
    refused: int = 0
    extra: dict[str, object] = field(default_factory=dict)


def tally(fault: str, sent: dict[str, int], engine: Engine) -> FaultCounts:
    """Compare what each device queued (seq 0..n-1) with what the database holds."""
    stored = stored_seqs(engine)
    counts = FaultCounts(fault=fault, sent=sum(sent.values()))
    for device_id, n in sent.items():
        got = stored.get(device_id, [])
        counts.stored += len(got)
        counts.lost += len(set(range(n)) - set(got))
        counts.duplicates_stored += len(got) - len(set(got))
    return counts


class _Device:
    def __init__(self, device_id: str, root: Path, host: str, port: int, password: str | None) -> None:
        self.device_id = device_id
        self.buffer = DiskBuffer(root / device_id, BufferSettings(fsync=False))
        settings = MqttSettings(
            device_id=device_id,
            host=host,
            port=port,
            password=password,
            reconnect_min_s=0.05,
            reconnect_max_s=0.5,
            keepalive_s=5,
        )
        status = Status(device_id=device_id, ts=T0, uptime_s=1, hardware_class="esp32-s3", agent_version="t")
        self.link = MqttLink(settings, self.buffer, lambda: status, seed=hash(device_id) & 0xFFFF)
        self.publisher = TelemetryPublisher(device_id, self.buffer)
        self.sent = 0

    def publish_next(self) -> None:
        if self.publisher.publish(metrics_window(self.device_id, self.sent)) is not None:
            self.sent += 1


class DeviceFleet:
    """``n`` devices publishing one window each per ``period_s`` until ``stop_producing()``."""

    def __init__(
        self,
        ids: list[str],
        root: Path,
        host: str,
        port: int,
        *,
        secrets: dict[str, str] | None = None,
        period_s: float = 0.02,
    ) -> None:
        self.devices = [_Device(d, root, host, port, (secrets or {}).get(d)) for d in ids]
        self.period_s = period_s
        self._producing = threading.Event()
        self._producer: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> None:
        for d in self.devices:
            d.link.start()
        deadline = time.monotonic() + timeout
        for d in self.devices:
            if not d.link.wait_connected(max(0.1, deadline - time.monotonic())):
                raise RuntimeError(f"device {d.device_id} did not connect")

    def produce(self, windows_per_device: int | None = None) -> None:
        """Start producing in the background (forever, or ``windows_per_device`` more each)."""
        self._producing.set()
        target = None if windows_per_device is None else self.sent + windows_per_device * len(self.devices)

        def run() -> None:
            while self._producing.is_set() and (target is None or self.sent < target):
                for d in self.devices:
                    d.publish_next()
                time.sleep(self.period_s)
            self._producing.clear()

        self._producer = threading.Thread(target=run, name="fleet-producer", daemon=True)
        self._producer.start()

    def stop_producing(self) -> None:
        self._producing.clear()
        if self._producer is not None:
            self._producer.join(30)
            self._producer = None

    def wait_produced(self, timeout: float) -> bool:
        if self._producer is None:
            return True
        self._producer.join(timeout)
        return not self._producer.is_alive()

    @property
    def sent(self) -> int:
        return sum(d.sent for d in self.devices)

    def sent_by_device(self) -> dict[str, int]:
        return {d.device_id: d.sent for d in self.devices}

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(d.link.wait_drained(max(0.1, deadline - time.monotonic())) for d in self.devices)

    def link_counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for d in self.devices:
            for k, v in d.link.counters.as_dict().items():
                total[k] = total.get(k, 0) + v
        return total

    def close(self) -> None:
        self.stop_producing()
        for d in self.devices:
            d.link.stop(timeout=2.0)
            d.buffer.close()
