"""Ingest test/bench helpers: telemetry windows, provisioned devices, a bounded QoS 1 publisher."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt

# One provisioning helper for the ingest tests and the reliability fleet (tests/support, on sys.path).
from device_fleet import provision_devices  # noqa: F401  (re-exported to the ingest tests)
from sqlalchemy import Engine, func, select

from telemetry.codec import encode_cbor
from telemetry.schemas import MetricsWindow, ModelRef


def window(device_id: str, seq: int, *, version: int = 7, fallback_level: int = 0) -> MetricsWindow:
    return MetricsWindow(
        device_id=device_id,
        seq=seq,
        window_start_s=1_795_000_000 + 60 * seq,
        window_len_s=60,
        duty_cycle=0.0812,
        battery_pct=87.5,
        battery_mv=3987,
        inferences=3000 + seq % 7,
        positives=120,
        false_positives=seq % 5,
        latency_p50_us=8123,
        latency_p95_us=12_456,
        latency_max_us=40_123,
        model=ModelRef(name="kws-yesno", version=version, variant="full_int8"),
        fallback_level=fallback_level,
        input_feature=3,
        input_hist=[10, 200, 300, 400, 500, 600, 500, 300, 150, 40],
        output_hist=[1000, 800, 400, 200, 150, 120, 100, 90, 80, 60],
    )


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def wait_until(predicate: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


class Publisher:
    """A device-side paho client publishing QoS 1 with a bounded in-flight window.

    Unbounded QoS 1 publishing makes paho's own bookkeeping (its out-message dict) the bottleneck, so
    at most ``inflight`` messages are outstanding; ``publish_all`` waits until the broker acked all.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        inflight: int = 200,
        protocol: int = mqtt.MQTTv311,
    ) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(inflight)
        self._inflight = threading.Semaphore(inflight)
        self.acked = 0
        self.refused = 0  # MQTT 5 PUBACK with a failure reason (e.g. not authorised)
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        self.connect_reason: Any = None
        self.client.on_connect = self._on_connect
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        self.connected.wait(10)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connect_reason = reason
        self.connected.set()

    def _on_publish(self, _c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused += 1
        self.acked += 1
        self._inflight.release()

    def publish_all(self, messages: Iterable[tuple[str, bytes]], qos: int = 1, timeout: float = 60) -> int:
        n = 0
        target = self.acked
        for topic, payload in messages:
            if qos and not self._inflight.acquire(timeout=timeout):
                raise TimeoutError("broker stopped acknowledging publishes")
            info = self.client.publish(topic, payload, qos=qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")
            n += 1
        if qos and not wait_until(lambda: self.acked >= target + n, timeout, every=0.01):
            raise TimeoutError(f"broker acknowledged {self.acked - target} of {n} publishes")
        return n

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def cbor_window(device_id: str, seq: int) -> bytes:
    return encode_cbor(window(device_id, seq))
