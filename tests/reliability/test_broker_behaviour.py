"""What the real Mosquitto does with sessions across its own restart: the facts the ingest design rests on.

Pinned here because one of them is a gap (RELIABILITY.md, "Known gaps"): Mosquitto (2.0.11 here) keeps a
persistent session's plain subscriptions and queued messages across a restart, but not its shared
(``$share/...``) subscriptions. Until the ingest workers re-subscribe, telemetry has no subscriber; the
broker PUBACKs it to a device on MQTT 3.1.1 and drops it. A device on MQTT 5 is told so: the PUBACK
carries reason 0x10 "No matching subscribers", on which it could keep the record and retry. If a broker
upgrade changes any of this, these tests fail and RELIABILITY.md must be revisited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mosquitto_broker import MosquittoBroker, mosquitto_available
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from process_harness import wait_until

from telemetry.topics import shared_subscription, telemetry_topic

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path / "broker", persistence=True) as b:
        yield b


class Subscriber:
    """An MQTT 5 persistent session (clean_start=False, session expiry 1 h), like an ingest worker."""

    def __init__(self, broker: MosquittoBroker, client_id: str, topic: str | None) -> None:
        self.got: list[bytes] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        if topic is not None:
            self.client.subscribe([(topic, SubscribeOptions(qos=1))])
            assert subscribed.wait(5)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.got.append(bytes(msg.payload))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(broker: MosquittoBroker, topic: str, payloads: list[bytes], protocol: int) -> list[int]:
    """Publish QoS 1 and return each PUBACK's reason code (always 0 on MQTT 3.1.1: it has none)."""
    codes: list[int] = []
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}", protocol=protocol
    )
    client.on_publish = lambda _c, _u, _mid, reason, _p: codes.append(int(reason.value))
    client.connect(broker.host, broker.port)
    client.loop_start()
    for p in payloads:
        client.publish(topic, p, qos=1).wait_for_publish(5)
    assert wait_until(lambda: len(codes) == len(payloads), 5)
    client.disconnect()
    client.loop_stop()
    return codes


@pytest.mark.parametrize("shared", [False, True], ids=["plain-subscription", "shared-subscription"])
def test_persistent_session_across_broker_restart(broker: MosquittoBroker, shared: bool) -> None:
    topic = telemetry_topic("dev-x")
    filt = shared_subscription("pin-group", "telemetry") if shared else "tinyfleet/v1/+/telemetry"
    sub = Subscriber(broker, "pin-sub", filt)
    publish(broker, topic, [b"before"], mqtt.MQTTv311)
    assert wait_until(lambda: sub.got == [b"before"], 5)
    sub.close()
    publish(broker, topic, [b"offline"], mqtt.MQTTv311)  # queued for the offline session
    broker.restart()
    codes = publish(broker, topic, [b"after-restart"], mqtt.MQTTv311)
    assert codes == [0], "MQTT 3.1.1: the device is told 'delivered' either way"
    # Reconnect the session WITHOUT subscribing again: what does the broker still hold for it?
    sub = Subscriber(broker, "pin-sub", None)
    time.sleep(1.0)  # nothing to poll for in the shared case: absence is the observation
    held = list(sub.got)
    sub.close()
    print(f"\nshared={shared} delivered after restart without re-subscribing: {held}")
    if shared:
        assert held == [b"offline"], "queued messages kept, but the $share subscription is gone"
    else:
        assert held == [b"offline", b"after-restart"], "plain subscription restored from persistence"


def test_mqtt5_publisher_is_told_when_nobody_subscribes(broker: MosquittoBroker) -> None:
    topic = telemetry_topic("dev-y")
    assert publish(broker, topic, [b"1"], mqtt.MQTTv5) == [16], "0x10 No matching subscribers"
    sub = Subscriber(broker, "pin-sub-5", shared_subscription("pin-group", "telemetry"))
    try:
        assert publish(broker, topic, [b"2"], mqtt.MQTTv5) == [0]
        assert wait_until(lambda: sub.got == [b"2"], 5)
    finally:
        sub.close()
