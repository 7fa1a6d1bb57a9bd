"""The topic layout against a real Mosquitto broker: the ``%u`` pattern ACLs confine each device to its
own subtree, shared subscriptions deliver telemetry to ingest workers, and payloads survive the trip."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from telemetry.codec import decode, decode_from_topic, encode
from telemetry.errors import DeviceMismatch
from telemetry.schemas import MetricsWindow, ModelRef, Ping
from telemetry.topics import MOSQUITTO_DEVICE_ACL, PREFIX, cmd_topic, shared_subscription, telemetry_topic

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None,
    reason="needs the mosquitto broker (make system-tools)",
)

USERS = {"dev-a": "pw-a", "dev-b": "pw-b", "server": "pw-s"}
TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    d = tmp_path_factory.mktemp("mosquitto")
    passwd = d / "passwd"
    for i, (user, pw) in enumerate(USERS.items()):
        flags = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", "-b", *flags, str(passwd), user, pw], check=True, capture_output=True
        )
    acl = d / "acl"
    acl.write_text(f"user server\ntopic readwrite {PREFIX}/#\n\n" + "\n".join(MOSQUITTO_DEVICE_ACL) + "\n")
    port = _free_port()
    conf = d / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\nacl_file {acl}\n"
        f"persistence false\nuser {getpass.getuser()}\nlog_dest stderr\n"
    )
    log = (d / "broker.log").open("wb")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {Path(log.name).read_text()}") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT)
        log.close()


class Peer:
    """A connected MQTT v5 client that records messages, PUBACK and SUBACK reason codes."""

    def __init__(self, port: int, user: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.puback: dict[int, Any] = {}
        self.suback: dict[int, list[Any]] = {}
        self._connected = threading.Event()
        self._cond = threading.Condition()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-test", protocol=mqtt.MQTTv5)
        c.username_pw_set(user, USERS[user])
        c.on_connect = lambda *a: self._connected.set()
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert self._connected.wait(TIMEOUT), f"{user} could not connect"
        self.client = c

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._cond:
            self.puback[mid] = rc
            self._cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: list[Any], props: Any) -> None:
        with self._cond:
            self.suback[mid] = rcs
            self._cond.notify_all()

    def _wait(self, pred: Any) -> None:
        with self._cond:
            assert self._cond.wait_for(pred, TIMEOUT), "timed out waiting for the broker"

    def subscribe(self, filter_: str) -> Any:
        _, mid = self.client.subscribe(filter_, qos=1)
        self._wait(lambda: mid in self.suback)
        return self.suback[mid][0]

    def publish(self, topic: str, payload: bytes) -> Any:
        mid = self.client.publish(topic, payload, qos=1).mid
        self._wait(lambda: mid in self.puback)
        return self.puback[mid]

    def wait_messages(self, n: int) -> list[mqtt.MQTTMessage]:
        self._wait(lambda: len(self.messages) >= n)
        return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def window(device: str, seq: int) -> MetricsWindow:
    return MetricsWindow(
        device_id=device,
        seq=seq,
        window_start_s=1_795_000_000,
        window_len_s=60,
        duty_cycle=0.05,
        inferences=60,
        positives=3,
        false_positives=0,
        latency_p50_us=900,
        latency_p95_us=1500,
        latency_max_us=2100,
        model=ModelRef(name="kws", version=3, variant="full_int8"),
        output_hist=[30, 20, 5, 3, 2],
    )


def test_acl_confines_devices_and_shared_subscription_delivers(broker: int) -> None:
    server, dev_a, dev_b = Peer(broker, "server"), Peer(broker, "dev-a"), Peer(broker, "dev-b")
    try:
        assert not server.subscribe(shared_subscription("ingest")).is_failure
        assert not dev_a.subscribe(cmd_topic("dev-a")).is_failure
        # Mosquitto grants the subscription but enforces "read" on delivery (checked below).
        dev_b.subscribe(cmd_topic("dev-a"))
        # A device may not publish into another device's subtree (MQTT 5 PUBACK "Not authorized").
        assert dev_b.publish(telemetry_topic("dev-a"), encode(window("dev-a", 99))).is_failure
        assert not dev_a.publish(telemetry_topic("dev-a"), encode(window("dev-a", 1))).is_failure

        got = server.wait_messages(1)
        time.sleep(0.3)  # give a wrongly routed message the chance to show up
        assert len(server.messages) == 1
        msg = decode_from_topic(got[0].topic, got[0].payload)
        assert msg == window("dev-a", 1)

        # Server -> device command; the device checks it is the addressee.
        ping = Ping(device_id="dev-a", cmd_id="ping-1", ts=1_795_000_100)
        assert not server.publish(cmd_topic("dev-a"), encode(ping, "json")).is_failure
        received = dev_a.wait_messages(1)[0]
        assert decode(received.payload, expected_device_id="dev-a") == ping
        with pytest.raises(DeviceMismatch):
            decode(received.payload, expected_device_id="dev-b")
        time.sleep(0.3)
        assert dev_b.messages == []  # dev-b's subscription to dev-a's commands delivered nothing
    finally:
        for p in (server, dev_a, dev_b):
            p.close()
