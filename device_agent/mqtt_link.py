"""The agent's MQTT connection: replays the disk buffer at QoS 1, keeps a last will, takes commands.

Threading: one link thread owns the paho client and runs an explicit loop (``client.loop()``) rather
than paho's ``loop_start``. Everything paho calls back (``on_connect``, ``on_publish``, ``on_message``)
therefore runs on that same thread, which is what makes the mid -> buffer-seq map safe without locks:
a PUBACK can never be processed before the ``publish()`` that created its mid has returned. (With
``loop_start`` the ack may arrive on the network thread first, and paho calls ``on_publish`` while
holding its own message lock, so taking ours there could deadlock.) Owning the loop also gives us
exponential backoff *with jitter*, which paho's ``reconnect_delay_set`` lacks; jitter keeps a fleet
that lost its broker from reconnecting in lock-step.

Delivery: producers only ever append to the :class:`DiskBuffer`. The link reads at most
``inflight_window`` records ahead of the last PUBACK, publishes them at QoS 1 and acks them in the
buffer when the broker's PUBACK arrives. Records still unacknowledged when the connection drops stay
in paho's session and are re-sent first (DUP) after the reconnect; after an agent restart the buffer
replays from its persisted cursor. Either way: in order, nothing lost, duplicates only for records
whose PUBACK was not yet recorded (the server de-duplicates by (device_id, seq)).

Status: on every connect the link publishes the device's Status with ``"online": true`` (retained,
QoS 1) and registers the same Status with ``"online": false`` as the last will, so the broker marks
the device offline when it vanishes. A graceful ``stop()`` publishes the offline status itself (a
clean DISCONNECT suppresses the will).
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import cbor2
import paho.mqtt.client as mqtt

from device_agent.commands import CommandIntake
from device_agent.disk_buffer import DiskBuffer
from device_agent.sections import Section, SectionError, bounded
from telemetry import device_codec
from telemetry.topics import cmd_topic, status_topic, validate_device_id

log = logging.getLogger(__name__)

QOS = 1


# Validated dataclasses (device_agent.sections), not pydantic models: the running agent cannot afford
# pydantic's ~15 MB. Bad values raise SectionError (a ValueError) naming the field.


@dataclass(frozen=True, kw_only=True)
class TlsSettings(Section):
    """TLS towards the broker (mosquitto ``listener 8883`` with ``cafile``/``certfile``/``keyfile``)."""

    ca_file: Path | None = None  # None: the system trust store
    cert_file: Path | None = None  # client certificate (mutual TLS), with key_file
    key_file: Path | None = None
    insecure_skip_hostname_check: bool = False

    def _validate(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise SectionError(("tls",), "tls.cert_file and tls.key_file must be given together")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise SectionError(("tls", name), f"tls.{name} {path} does not exist")


_TRANSPORTS = ("tcp", "websockets")


_PROTOCOLS = ("5", "3.1.1")
_NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason code


@dataclass(frozen=True, kw_only=True)
class MqttSettings(Section):
    """Connection settings of one device. Client id and username default to the device id."""

    device_id: str
    host: str = "127.0.0.1"
    port: int = bounded(1883, ge=1, le=65535)
    client_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr or a log line
    keepalive_s: int = bounded(30, ge=5, le=3600)
    transport: str = "tcp"  # "tcp" | "websockets"
    tls: TlsSettings | None = None
    reconnect_min_s: float = bounded(1.0, gt=0, le=3600)
    reconnect_max_s: float = bounded(60.0, gt=0, le=86_400)
    jitter: float = bounded(0.5, ge=0, le=1)  # each delay is scaled by uniform(1 - jitter, 1)
    inflight_window: int = bounded(16, ge=1, le=1000)
    clean_session: bool = False  # persistent session: the broker queues QoS 1 commands while offline
    # MQTT 5 by default: its PUBACK says "no matching subscribers" (0x10) when nobody took a window
    # (e.g. the ingest workers' shared subscriptions are not back yet after a broker restart), and the
    # link keeps such records and sends them again; MQTT 3.1.1 acks them silently. "3.1.1" for brokers
    # without MQTT 5 (the demo's embedded Python broker).
    protocol: str = "5"
    session_expiry_s: int = bounded(7 * 86_400, ge=0, le=4_294_967_295)  # MQTT 5 persistent session life
    unrouted_retry_s: float = bounded(2.0, gt=0, le=3600)  # wait before re-sending unrouted records
    poll_s: float = bounded(0.05, gt=0, le=5)  # loop timeout = latency for newly buffered records

    def _validate(self) -> None:
        try:
            validate_device_id(self.device_id)
        except ValueError as exc:
            raise SectionError(("device_id",), str(exc)) from None
        if self.protocol not in _PROTOCOLS:
            raise SectionError(("protocol",), f"must be one of {_PROTOCOLS}, got {self.protocol!r}")
        if self.transport not in _TRANSPORTS:
            raise SectionError(("transport",), f"must be one of {_TRANSPORTS}, got {self.transport!r}")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise SectionError(("reconnect_max_s",), "reconnect_max_s must be >= reconnect_min_s")

    @classmethod
    def from_url(cls, device_id: str, url: str, **kwargs: Any) -> MqttSettings:
        """Settings from a broker URL: ``mqtt|tcp://`` plain, ``mqtts|ssl://`` TLS, ``ws|wss://``."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _URL_SCHEMES or not parts.hostname:
            raise ValueError(f"broker url must be <{'|'.join(_URL_SCHEMES)}>://host[:port], got {url!r}")
        transport, secure, default_port = _URL_SCHEMES[scheme]
        tls = kwargs.pop("tls", None)
        if secure and tls is None:
            tls = TlsSettings()
        return cls(device_id=device_id, host=parts.hostname, port=parts.port or default_port,
                   transport=transport, tls=tls, **kwargs)

    @property
    def effective_client_id(self) -> str:
        return self.client_id or self.device_id

    @property
    def effective_username(self) -> str:
        return self.username or self.device_id


# scheme -> (transport, TLS, default port)
_URL_SCHEMES: dict[str, tuple[Literal["tcp", "websockets"], bool, int]] = {
    "mqtt": ("tcp", False, 1883),
    "tcp": ("tcp", False, 1883),
    "mqtts": ("tcp", True, 8883),
    "ssl": ("tcp", True, 8883),
    "ws": ("websockets", False, 80),
    "wss": ("websockets", True, 443),
}


def backoff_delay(attempt: int, min_s: float, max_s: float, jitter: float, rng: random.Random) -> float:
    """Exponential backoff, capped, scaled down by up to ``jitter`` at random."""
    base = min(max_s, min_s * (2 ** min(attempt, 32)))
    return base * (1.0 - jitter * rng.random())


@dataclass(slots=True)
class LinkCounters:
    connects: int = 0  # CONNACK accepted
    connect_failures: int = 0  # TCP/TLS connect failed (broker down, DNS, TLS)
    refused: int = 0  # CONNACK refused (bad credentials, not authorised)
    disconnects: int = 0  # connection lost or closed after a successful connect
    published: int = 0  # buffer records handed to paho (re-sends by paho not counted)
    acked: int = 0  # PUBACKs for buffer records
    unrouted: int = 0  # MQTT 5 PUBACKs "no matching subscribers": kept in the buffer and sent again
    bad_records: int = 0  # buffer records paho refused (invalid topic); acked away so they cannot block
    status_published: int = 0
    subscribe_failures: int = 0  # SUBACK refused the cmd subscription (ACL)
    internal_errors: int = 0  # iterations that raised (logged with traceback); the link carried on

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


StatusFactory = Callable[[], Any]  # a telemetry.device_codec.Status (or a pydantic telemetry.schemas.Status)
# Status fields (schema 1.1) an ``extra_status`` callback may supply; validated, not passed through.
STATUS_EXTRA_FIELDS = ("buffer_pending", "buffer_dropped", "cmd_rejected")


def _status_dict(status: Any) -> dict[str, Any]:
    dump = getattr(status, "model_dump", None)  # pydantic Status of older callers
    return dump(mode="json") if dump is not None else device_codec.as_dict(status)


class MqttLink:
    """Owns the paho client and the link thread. ``start()`` returns at once, broker up or not."""

    def __init__(
        self,
        settings: MqttSettings,
        buffer: DiskBuffer,
        status_factory: StatusFactory,
        *,
        intake: CommandIntake | None = None,
        codec: Literal["cbor", "json"] = "cbor",
        extra_status: Callable[[], dict[str, Any]] | None = None,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self.buffer = buffer
        self.intake = intake
        self.codec = codec
        self.counters = LinkCounters()
        self._status_factory = status_factory
        self._extra_status = extra_status
        self._rng = random.Random(seed)
        self._status_topic = status_topic(settings.device_id)
        self._cmd_topic = cmd_topic(settings.device_id)
        self._inflight: dict[int, int] = {}  # paho mid -> buffer seq; touched by the link thread only
        self._acked_mids: list[int] = []
        self._unrouted_mids: list[int] = []
        self._resend_at: float | None = None  # monotonic time to re-read unrouted records; None: none
        self._connected = threading.Event()
        self._status_wanted = threading.Event()
        self._reply_to: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._attempt = 0
        self._socket_open = False
        self._client = self._make_client()

    # ------------------------------------------------------------------ set-up

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        if s.protocol == "5":
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=s.effective_client_id,
                protocol=mqtt.MQTTv5,
                transport=s.transport,
            )
        else:
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=s.effective_client_id,
                clean_session=s.clean_session,
                protocol=mqtt.MQTTv311,
                transport=s.transport,
            )
        client.username_pw_set(s.effective_username, s.password)
        if s.tls is not None:
            client.tls_set(
                ca_certs=str(s.tls.ca_file) if s.tls.ca_file else None,
                certfile=str(s.tls.cert_file) if s.tls.cert_file else None,
                keyfile=str(s.tls.key_file) if s.tls.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            client.tls_insecure_set(s.tls.insecure_skip_hostname_check)
        # Our window bounds what is in paho; paho's own limit sits above it so it never queues
        # (a "queued" message makes paho stop re-sending the rest of the session after a reconnect).
        client.max_inflight_messages_set(s.inflight_window + 8)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        if s.protocol == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            if not s.clean_session:
                props.SessionExpiryInterval = s.session_expiry_s
            # records host/port/session options; no I/O yet (reconnect() reuses them)
            client.connect_async(s.host, s.port, s.keepalive_s, clean_start=s.clean_session, properties=props)
        else:
            client.connect_async(s.host, s.port, s.keepalive_s)
        return client

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("link already started")
        if self._stop.is_set():
            raise RuntimeError("link was stopped; a link is one-shot, create a new MqttLink")
        # A new paho client has no session: whatever an earlier link handed out but never got a PUBACK
        # for must be read again (at-least-once; the server de-duplicates).
        self.buffer.rewind()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-link-{self.settings.device_id}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the offline status if connected, disconnect cleanly, join the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def request_status(self, reply_to: str | None = None) -> None:
        """Re-publish the (retained) online status soon, e.g. after the model or slot changed, or as
        the answer to a Ping (``reply_to`` = its cmd_id, copied into ``Status.reply_to``).

        Thread-safe: only the link thread touches the paho client; this just raises a flag for it.
        """
        self._reply_to = reply_to
        self._status_wanted.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_drained(self, timeout: float) -> bool:
        """True once every buffered record is acknowledged (tests, benchmarks, graceful shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.buffer.stats()
            if st.pending == 0 and st.in_flight == 0:
                return True
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------------ status payloads

    def _status_payload(self, online: bool) -> bytes:
        # "online", buffer_pending, buffer_dropped and cmd_rejected are Status fields since telemetry
        # schema 1.1 and are validated as such (the device codec: no pydantic); any other extras ride as
        # extra keys, which decoders ignore (minor-version rule).
        extras = dict(self._extra_status()) if self._extra_status is not None else {}
        fields: dict[str, Any] = {k: extras.pop(k) for k in STATUS_EXTRA_FIELDS if k in extras}
        fields["online"] = online
        if online and self._reply_to is not None:
            fields["reply_to"], self._reply_to = self._reply_to, None
        status = self._status_factory()
        body = _status_dict(status)
        body.update(fields)
        body = device_codec.as_dict(device_codec.record_from_dict(body))  # validates the new values
        body.update({k: v for k, v in extras.items() if k not in body})
        if self.codec == "json":
            return json.dumps(body, separators=(",", ":")).encode()
        return cbor2.dumps(body)

    def _set_will(self) -> None:
        try:
            payload = self._status_payload(online=False)
            self._client.will_set(self._status_topic, payload, qos=QOS, retain=True)
        except Exception:
            log.exception("could not build the last-will status; connecting without a will")

    def _publish_status(self, online: bool) -> None:
        try:
            payload = self._status_payload(online)
        except Exception:
            log.exception("could not build the status message")
            return
        self._client.publish(self._status_topic, payload, qos=QOS, retain=True)
        self.counters.status_published += 1

    # ------------------------------------------------------------------ paho callbacks (link thread)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.counters.refused += 1
            log.error("broker %s:%d refused the connection: %s", self.settings.host, self.settings.port,
                      reason_code)
            return
        self.counters.connects += 1
        self._attempt = 0
        log.info("connected to %s:%d as %s (session present: %s)", self.settings.host, self.settings.port,
                 self.settings.effective_client_id, flags.session_present)
        client.subscribe(self._cmd_topic, qos=QOS)
        self._publish_status(online=True)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any,
                       reason_code: Any, properties: Any) -> None:
        self._socket_open = False
        if self._connected.is_set() and not self._stop.is_set():
            self.counters.disconnects += 1
            log.warning("disconnected from broker: %s; %d record(s) in flight will be re-sent",
                        reason_code, len(self._inflight))
        self._connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: Any, properties: Any) -> None:
        # Called from inside client.loop() on this thread; the buffer is told after loop() returns.
        if getattr(reason_code, "value", 0) == _NO_MATCHING_SUBSCRIBERS:
            self._unrouted_mids.append(mid)
        else:
            self._acked_mids.append(mid)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[Any],
                      properties: Any) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self.counters.subscribe_failures += 1
            log.error("broker refused the subscription to %s (%s): no commands will arrive",
                      self._cmd_topic, ", ".join(str(rc) for rc in reason_codes))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Handled before paho sends our PUBACK: a command is acknowledged only once it was taken in.
        if message.topic != self._cmd_topic:
            log.warning("message on unexpected topic %r ignored", message.topic)
            return
        if self.intake is None:
            log.warning("command received but no command intake is configured; ignored")
            return
        self.intake.handle(message.payload)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:
                # The link must outlive any one bad iteration (e.g. a buffer file removed under us):
                # log it, count it, pause briefly and carry on; the buffer still holds everything.
                self.counters.internal_errors += 1
                log.exception("MQTT link iteration failed (internal_errors=%d)",
                              self.counters.internal_errors)
                self._stop.wait(0.5)
        try:
            self._shutdown()
        except Exception:
            log.exception("MQTT link shutdown failed")

    def _step(self) -> None:
        if not self._socket_open and not self._try_connect():
            return
        rc = self._client.loop(timeout=self.settings.poll_s)
        self._settle_acks()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            self._socket_open = False
            self._connected.clear()
            self._wait_backoff(f"connection lost ({mqtt.error_string(rc)})")
            return
        if self._connected.is_set():
            if self._status_wanted.is_set():
                self._status_wanted.clear()
                self._publish_status(online=True)
            self._pump()

    def _try_connect(self) -> bool:
        self._set_will()
        try:
            self._client.reconnect()
        except (OSError, ssl.SSLError) as exc:
            self.counters.connect_failures += 1
            self._wait_backoff(f"cannot connect to {self.settings.host}:{self.settings.port}: {exc}")
            return False
        self._socket_open = True
        return True

    def _wait_backoff(self, why: str) -> None:
        s = self.settings
        delay = backoff_delay(self._attempt, s.reconnect_min_s, s.reconnect_max_s, s.jitter, self._rng)
        level = logging.WARNING if self._attempt == 0 else logging.DEBUG  # one line per outage, not per try
        log.log(level, "%s; retrying in %.2fs (attempt %d); buffering meanwhile",
                why, delay, self._attempt + 1)
        self._attempt += 1
        self._stop.wait(delay)

    def _settle_acks(self) -> None:
        if self._unrouted_mids:
            unrouted = [self._inflight.pop(mid) for mid in self._unrouted_mids if mid in self._inflight]
            self._unrouted_mids.clear()
            if unrouted:
                if self._resend_at is None:
                    log.warning("broker: no subscriber for %d record(s); keeping them, re-sending in %.1fs",
                                len(unrouted), self.settings.unrouted_retry_s)
                self.counters.unrouted += len(unrouted)
                self._resend_at = time.monotonic() + self.settings.unrouted_retry_s
        if not self._acked_mids:
            return
        seqs = [self._inflight.pop(mid) for mid in self._acked_mids if mid in self._inflight]
        self._acked_mids.clear()  # mids not in the map were status publishes
        if seqs:
            self.counters.acked += len(seqs)
            self.buffer.ack(seqs)

    def _pump(self) -> None:
        if self._resend_at is not None:
            # Hold new sends until the unrouted records can go again, in order: wait out the delay and
            # the records still in flight, then re-read from the oldest unacknowledged one.
            if time.monotonic() < self._resend_at or self._inflight:
                return
            self._resend_at = None
            self.buffer.rewind()
        room = self.settings.inflight_window - len(self._inflight)
        if room <= 0:
            return
        for rec in self.buffer.read_next(room):
            try:
                info = self._client.publish(rec.topic, rec.payload, qos=QOS)
            except ValueError as exc:
                self.counters.bad_records += 1
                log.error("buffer record %d on topic %r cannot be published (%s); discarded", rec.seq,
                          rec.topic, exc)
                self.buffer.ack([rec.seq])
                continue
            # rc NO_CONN: paho keeps it in its session and sends it after the reconnect; keep the mapping.
            self._inflight[info.mid] = rec.seq
            self.counters.published += 1

    def _shutdown(self) -> None:
        if self._connected.is_set():
            self._publish_status(online=False)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and self._client.want_write():
                self._client.loop(timeout=0.05)
            self._client.loop(timeout=0.05)
            self._settle_acks()
            self._client.disconnect()
            self._client.loop(timeout=0.05)
        else:
            self._client.disconnect()
        self._connected.clear()
        log.info("MQTT link stopped (%s)", self.counters.as_dict())
