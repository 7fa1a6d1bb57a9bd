"""MQTT command publisher (paho-mqtt 2.x, QoS 1) and the outbox drain.

``publish_outbox`` sends unsent outbox rows in id order and marks them sent only after the broker's
PUBACK; rows whose PUBACK did not come stay unsent and go again on the next drain with the same
``cmd_id`` and bytes. A rapid-tier retarget row waits for its ``not_before`` and is skipped (never sent)
when the device already reports the previous version.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import paho.mqtt.client as mqtt
from sqlalchemy import Engine, or_, select, update

from fleet_server.db.devices import Device
from fleet_server.db.rollouts import RolloutCommand, RolloutRow
from telemetry.topics import cmd_topic

log = logging.getLogger(__name__)


class CommandPublisher(Protocol):
    def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> list[bool]:
        """Publish (topic, payload) at QoS 1; True for each message the broker acknowledged."""
        ...


@dataclass(frozen=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None


class MqttCommandPublisher:
    """One persistent paho connection; ``publish_many`` waits for every PUBACK (bounded in flight)."""

    def __init__(
        self, broker: BrokerAddress, *, client_id: str = "", timeout_s: float = 10.0, max_inflight: int = 200
    ) -> None:
        self.broker = broker
        self.timeout_s = timeout_s
        self._connected = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if broker.username is not None:
            self._client.username_pw_set(broker.username, broker.password)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(0.1, 5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._started = False

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object
    ) -> None:
        if reason.is_failure:
            log.error("command publisher: broker refused the connection: %s", reason)
            return
        self._connected.set()

    def _on_disconnect(self, *_args: object) -> None:
        self._connected.clear()

    def connect(self) -> None:
        if not self._started:
            self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
            self._client.loop_start()
            self._started = True
        if not self._connected.wait(self.timeout_s):
            raise ConnectionError(f"MQTT broker {self.broker.host}:{self.broker.port} not reachable")

    def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> list[bool]:
        self.connect()
        infos = [self._client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + self.timeout_s
        acked = []
        for info in infos:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                acked.append(False)
                continue
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            acked.append(info.is_published())
        return acked

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False


@dataclass
class DrainResult:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    waiting: int = 0  # not due yet (retarget delay)


def _previous_counters(engine: Engine, rollout_ids: set[str]) -> dict[str, int | None]:
    with engine.connect() as conn:
        rows = conn.execute(select(RolloutRow.id, RolloutRow.state).where(RolloutRow.id.in_(rollout_ids)))
        return {rid: state["spec"]["release"].get("previous_counter") for rid, state in rows}


def publish_outbox(
    engine: Engine, publisher: CommandPublisher, now: float, *, batch: int = 1000, max_batches: int = 100
) -> DrainResult:
    """Drain due, unsent outbox rows (every rollout) through ``publisher``."""
    result = DrainResult()
    last_id = 0
    for _ in range(max_batches):
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    RolloutCommand.id,
                    RolloutCommand.rollout_id,
                    RolloutCommand.device_id,
                    RolloutCommand.kind,
                    RolloutCommand.payload,
                    RolloutCommand.not_before,
                )
                .where(
                    RolloutCommand.sent_at.is_(None),
                    RolloutCommand.skipped.is_(None),
                    RolloutCommand.id > last_id,
                )
                .order_by(RolloutCommand.id)
                .limit(batch)
            ).all()
        if not rows:
            break
        last_id = rows[-1][0]
        due = []
        for r in rows:
            if r[5] is not None and r[5] > now:
                result.waiting += 1
            else:
                due.append(r)
        skip_ids = _recovered_retargets(engine, [r for r in due if r[3] == "retarget"])
        to_send = [r for r in due if r[0] not in skip_ids]
        acked = publisher.publish_many([(cmd_topic(r[2]), bytes(r[4])) for r in to_send]) if to_send else []
        sent_ids = [r[0] for r, ok in zip(to_send, acked, strict=True) if ok]
        result.failed += len(to_send) - len(sent_ids)
        with engine.begin() as conn:
            if sent_ids:
                conn.execute(
                    update(RolloutCommand).where(RolloutCommand.id.in_(sent_ids)).values(sent_at=now)
                )
            if skip_ids:
                conn.execute(
                    update(RolloutCommand)
                    .where(RolloutCommand.id.in_(list(skip_ids)))
                    .values(skipped="device already runs the previous version")
                )
        result.sent += len(sent_ids)
        result.skipped += len(skip_ids)
        if result.failed:
            break  # broker trouble: retry on the next drain, in order
    return result


def _recovered_retargets(engine: Engine, rows: Sequence[tuple]) -> set[int]:
    if not rows:
        return set()
    previous = _previous_counters(engine, {r[1] for r in rows})
    with engine.connect() as conn:
        versions = dict(
            conn.execute(
                select(Device.id, Device.current_version).where(
                    Device.id.in_({r[2] for r in rows}), or_(Device.current_version.is_not(None))
                )
            ).all()
        )
    skip = set()
    for r in rows:
        prev = previous.get(r[1])
        if prev is not None and versions.get(r[2]) == str(prev):
            skip.add(r[0])
    return skip
