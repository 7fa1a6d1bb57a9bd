"""The ingest worker: one paho-mqtt 2.x client on a shared subscription, batching into the database.

Delivery guarantees, and what each one rests on:

* Shared subscription ``$share/<group>/tinyfleet/v1/+/<channel>``: the broker gives each message to
  one worker of the group, so adding workers splits the load.
* QoS 1 with ``manual_ack=True``: paho does not PUBACK on its own; the worker acks a message only
  after the transaction holding it has committed. A worker killed before the commit leaves its
  messages unacknowledged and the broker delivers them again (flag DUP).
* MQTT 5 persistent session (``clean_start=False``, Session Expiry Interval) under a stable client
  id: the broker keeps the unacknowledged messages (and queues new ones) while the worker is down
  and hands them back when it reconnects. With a clean session Mosquitto would discard them.
* Receive Maximum (MQTT 5): how many unacknowledged messages the broker may have in flight to us;
  it must exceed the batch size, or batches never fill.
* Redeliveries and device replays are absorbed by UNIQUE constraints (fleet_server.ingest.store).
* The database being away: the batch is retried with exponential backoff, nothing is acked meanwhile,
  and the broker stops sending once Receive Maximum messages are in flight.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, IntegrityError

from fleet_server.ingest.batching import Batch, Pending, Received
from fleet_server.ingest.classify import LookupFailed, Rejected, classify
from fleet_server.ingest.config import IngestConfig
from fleet_server.ingest.dead_letter import DeadLetterReason
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.store import BatchResult, KnownDevices, write_batch
from telemetry.topics import DEVICE_CHANNELS, fleet_filter, shared_subscription

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None


@dataclass
class WorkerStats:
    received: int = 0
    acked: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commit_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class IngestWorker:
    """Run with :meth:`run` (blocks until ``stop`` is set) or :meth:`start` + :meth:`stop` (a thread).

    ``protocol="mqtt311"`` is for the demo's embedded broker (amqtt has no MQTT 5): a 3.1.1 persistent
    session (``clean_session=False``) and a plain subscription to ``tinyfleet/v1/+/<channel>`` instead of
    ``$share/<group>/...``, so only ONE such worker may run per broker (each plain subscriber gets every
    message). Batching, commit, ack after commit and dead letters are the same.
    """

    def __init__(
        self,
        engine: Engine,
        broker: BrokerAddress,
        config: IngestConfig | None = None,
        metrics: IngestMetrics | None = None,
        *,
        protocol: Literal["mqtt5", "mqtt311"] = "mqtt5",
    ) -> None:
        if protocol not in ("mqtt5", "mqtt311"):
            raise ValueError(f"protocol must be 'mqtt5' or 'mqtt311', not {protocol!r}")
        self.engine = engine
        self.broker = broker
        self.protocol = protocol
        self.config = config or IngestConfig()
        self.metrics = metrics or IngestMetrics()
        self.stats = WorkerStats()
        self.known_devices = KnownDevices(engine, self.config.known_devices_refresh_s)
        self._inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._batch = Batch(self.config.batch_size, self.config.batch_delay_s)
        self._subscribed = threading.Event()
        self._connect_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = self._make_client()

    # ------------------------------------------------------------------ MQTT side (paho's thread)

    @property
    def _v311(self) -> bool:
        return self.protocol == "mqtt311"

    def _make_client(self) -> mqtt.Client:
        # paho refuses clean_session with MQTT 5 (there the session lives on via clean_start=False + expiry).
        session: dict[str, Any] = {"protocol": mqtt.MQTTv5}
        if self._v311:
            session = {"protocol": mqtt.MQTTv311, "clean_session": False}
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            manual_ack=True,
            **session,
        )
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        client.reconnect_delay_set(0.1, 5)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._connect_error = f"broker refused the connection: {reason}"
            log.error("ingest: %s", self._connect_error)
            return
        self._connect_error = None
        # Re-subscribing on a resumed session is harmless and covers a session the broker expired.
        if self._v311:
            client.subscribe([(fleet_filter(ch), 1) for ch in DEVICE_CHANNELS])  # type: ignore[arg-type]
            return
        client.subscribe(
            [(shared_subscription(self.config.group, ch), SubscribeOptions(qos=1)) for ch in DEVICE_CHANNELS]  # type: ignore[arg-type]
        )

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self._connect_error = f"subscription refused by the broker (ACL?): {', '.join(failed)}"
            log.error("ingest: %s", self._connect_error)
        else:
            self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # Raw topic bytes: msg.topic raises on invalid UTF-8, and this callback must never raise.
        self._inbox.put(Received(msg.mid, msg.qos, msg._topic, bytes(msg.payload)))

    # ------------------------------------------------------------------ lifecycle

    def connect(self, timeout: float = 10.0) -> None:
        """Connect, subscribe, start paho's network thread; raise if not subscribed within ``timeout``."""
        if self._v311:
            self._client.connect_async(self.broker.host, self.broker.port, keepalive=self.config.keepalive_s)
        else:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.config.session_expiry_s
            props.ReceiveMaximum = self.config.effective_receive_maximum
            self._client.connect_async(
                self.broker.host,
                self.broker.port,
                keepalive=self.config.keepalive_s,
                clean_start=False,
                properties=props,
            )
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            why = self._connect_error or f"no subscription on {self.broker.host}:{self.broker.port}"
            self._client.loop_stop()
            raise ConnectionError(f"ingest worker could not subscribe within {timeout}s: {why}")

    def run(self, stop: threading.Event | None = None, *, connect_timeout: float = 10.0) -> WorkerStats:
        """Connect and ingest until ``stop`` is set; a last commit + ack of what is pending, then leave."""
        stop = stop or self._stop
        self._refresh_known_devices(stop)
        self.connect(connect_timeout)
        # Commits run on their own thread: while PostgreSQL works on batch k, this thread decodes k+1.
        # The hand-over queue holds one batch, so a slow database slows intake (back-pressure) instead of
        # piling up memory; the broker stops sending at Receive Maximum unacked messages anyway.
        handover: queue.Queue[tuple[list[Pending], bool] | None] = queue.Queue(maxsize=1)
        writer = threading.Thread(
            target=self._writer, args=(handover, stop), name="ingest-writer", daemon=True
        )
        writer.start()
        try:
            while not stop.is_set():
                self._fill(stop)
                if self._batch.due:
                    handover.put((self._batch.take(), False))
            if len(self._batch):
                handover.put((self._batch.take(), True))  # last commit + ack before leaving
        finally:
            handover.put(None)
            writer.join()
            self._client.disconnect()
            self._client.loop_stop()
        return self.stats

    def _refresh_known_devices(self, stop: threading.Event) -> None:
        delay = self.config.retry_initial_s
        while True:
            try:
                self.known_devices.refresh()
                return
            except Exception as exc:  # database not up yet: wait for it rather than exit
                log.warning("ingest: cannot read devices (%s); retrying in %.1fs", type(exc).__name__, delay)
                if stop.wait(delay):
                    raise
                delay = min(delay * 2, self.config.retry_max_s)

    def _writer(
        self, handover: queue.Queue[tuple[list[Pending], bool] | None], stop: threading.Event
    ) -> None:
        while (job := handover.get()) is not None:
            items, final = job
            self._commit(items, None if final else stop, attempts=3 if final else None)

    def start(self) -> None:
        """Run in a background thread (tests, embedding in the API process)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="ingest-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    # ------------------------------------------------------------------ batching (caller's thread)

    def _fill(self, stop: threading.Event) -> None:
        left = self._batch.time_left()
        try:
            item = self._inbox.get(timeout=0.2 if left is None else max(left, 0.001))
        except queue.Empty:
            return
        self._add(item, stop)
        while not self._batch.full:  # drain what is already there without waiting
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._add(item, stop)

    def _add(self, item: Received, stop: threading.Event) -> None:
        self.stats.received += 1
        delay = self.config.retry_initial_s
        while True:
            try:
                outcome = classify(item.topic, item.payload, self.known_devices)
                break
            except LookupFailed as exc:  # the devices table is unreachable: wait, do not dead-letter
                log.warning("ingest: device lookup failed (%s); retrying in %.1fs", exc, delay)
                if stop.wait(delay):
                    return  # never batched, never acked: redelivered later
                delay = min(delay * 2, self.config.retry_max_s)
        self._batch.add(Pending(item, outcome))

    def _commit(
        self, items: list[Pending], stop: threading.Event | None, attempts: int | None = None
    ) -> None:
        """Commit the batch (retrying with backoff), then ack every message in it, in order."""
        delay = self.config.retry_initial_s
        tries = 0
        while True:
            tries += 1
            started = time.perf_counter()
            try:
                result = self._write(items)
                break
            except Exception as exc:  # DB errors above all; anything else must not kill the worker either
                self.stats.commit_failures += 1
                self.metrics.commit_failures.inc()
                log.warning(
                    "ingest: batch of %d not committed (%s); retry in %.1fs",
                    len(items),
                    type(exc).__name__,
                    delay,
                )
                if (attempts is not None and tries >= attempts) or (stop is not None and stop.wait(delay)):
                    return  # not acked: the broker redelivers to the next session of this client id
                if stop is None:
                    time.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_s)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        for item in items:
            if item.received.qos > 0:
                self._client.ack(item.received.mid, item.received.qos)
        self._count(result, len(items))

    def _write(self, items: list[Pending]) -> BatchResult:
        now = dt.datetime.now(dt.UTC)
        try:
            return write_batch(self.engine, items, now)
        except (IntegrityError, DataError):
            # Something in the batch the DB refuses for good: find it by writing one at a time, so one
            # bad message cannot block the rest forever.
            return self._write_one_by_one(items, now)

    def _write_one_by_one(self, items: list[Pending], now: dt.datetime) -> BatchResult:
        stored = dups = 0
        dead: dict[str, int] = {}
        for item in items:
            try:
                r = write_batch(self.engine, [item], now)
            except (IntegrityError, DataError) as exc:
                detail = f"database refused the message: {type(exc.orig).__name__}"
                r = write_batch(
                    self.engine,
                    [Pending(item.received, Rejected(DeadLetterReason.store_rejected, detail))],
                    now,
                )
            stored += r.stored
            dups += r.duplicates
            for k, v in r.dead_letters.items():
                dead[k] = dead.get(k, 0) + v
        return BatchResult(stored, dups, dead)

    def _count(self, result: BatchResult, n: int) -> None:
        s = self.stats
        s.batches += 1
        s.acked += n
        s.stored += result.stored
        s.duplicates += result.duplicates
        s.dead_lettered += result.dead_lettered
        m = self.metrics
        m.batches.inc()
        m.messages.labels("stored").inc(result.stored)
        m.messages.labels("duplicate").inc(result.duplicates)
        m.messages.labels("dead_lettered").inc(result.dead_lettered)
        for reason, k in result.dead_letters.items():
            m.dead_letters.labels(reason).inc(k)


__all__ = ["BrokerAddress", "IngestWorker", "WorkerStats"]
