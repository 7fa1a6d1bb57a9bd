"""MqttLink + DiskBuffer + CommandIntake against the real Mosquitto (system broker and private ones).

Every test counts windows sent / received / lost and asserts lost == 0 (or == the dropped counter where
the byte budget is the point). Duplicates are allowed only where a PUBACK can have been lost (agent
killed, broker stopped); the server de-duplicates by (device_id, seq). Counts are printed (-s).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cbor2
import paho.mqtt.client as mqtt
import pytest

from device_agent.sections import SectionError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _mqtt_support import analyse, status, window
from mosquitto_broker import SYSTEM_BROKER, MosquittoBroker, MqttCollector, mosquitto_available, port_open

from device_agent.commands import CommandIntake
from device_agent.disk_buffer import BufferSettings, DiskBuffer
from device_agent.mqtt_link import MqttLink, MqttSettings, TlsSettings, backoff_delay
from device_agent.publisher import TelemetryPublisher
from telemetry.codec import encode
from telemetry.schemas import Ping, Status
from telemetry.topics import MOSQUITTO_DEVICE_ACL, cmd_topic, status_topic, telemetry_topic

CHILD = Path(__file__).resolve().parent / "_mqtt_agent_child.py"
FAST_BUF = BufferSettings(fsync=False)

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")


def new_device() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def fast_settings(device_id: str, port: int, **kw: object) -> MqttSettings:
    return MqttSettings(device_id=device_id, port=port, reconnect_min_s=0.05, reconnect_max_s=0.4,
                        keepalive_s=5, **kw)  # type: ignore[arg-type]


@pytest.fixture
def system_broker() -> tuple[str, int]:
    if not port_open(*SYSTEM_BROKER):
        pytest.skip("no Mosquitto on 127.0.0.1:1883")
    return SYSTEM_BROKER


@pytest.fixture
def private(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A private broker with persistence (sessions survive its restart). Not started yet."""
    broker = MosquittoBroker(tmp_path / "broker", persistence=True)
    yield broker
    broker.stop()


def prime_session(broker: MosquittoBroker, client_id: str, topics: list[str]) -> None:
    """Create the collector's persistent subscription, so messages are kept for it from the first one."""
    broker.start()
    MqttCollector(broker.host, broker.port, topics, client_id=client_id).close()


def telemetry_payloads(col: MqttCollector, device_id: str) -> list[bytes]:
    return [m.payload for m in col.snapshot() if m.topic == telemetry_topic(device_id)]


def wait_for_count(col: MqttCollector, device_id: str, n: int, timeout: float) -> list[bytes]:
    col.wait_for(lambda ms: len({m.payload for m in ms if m.topic == telemetry_topic(device_id)}) >= n,
                 timeout)
    return telemetry_payloads(col, device_id)


def statuses(col: MqttCollector, device_id: str) -> list[dict[str, object]]:
    return [cbor2.loads(m.payload) for m in col.snapshot() if m.topic == status_topic(device_id)]


# ---------------------------------------------------------------------------------------------------


def test_publish_arrives_exactly_once_in_order_with_online_status(system_broker: tuple[str, int],
                                                                  tmp_path: Path) -> None:
    host, port = system_broker
    dev = new_device()
    col = MqttCollector(host, port, [telemetry_topic(dev), status_topic(dev)], client_id=f"col-{dev}",
                        clean_session=True)
    buf = DiskBuffer(tmp_path / "buf", FAST_BUF)
    link = MqttLink(fast_settings(dev, port, clean_session=True), buf, lambda: status(dev))
    pub = TelemetryPublisher(dev, buf)
    link.start()
    try:
        assert link.wait_connected(10)
        n = 300
        for seq in range(n):
            assert pub.publish(window(dev, seq)) is not None
        assert link.wait_drained(30)
        rep = analyse(wait_for_count(col, dev, n, 10), range(n))
        print(f"\nsent={n} received={rep.received} lost={len(rep.lost)} duplicates={rep.duplicates}")
        assert rep.lost == [] and rep.duplicates == 0 and rep.in_order
        assert [json.loads(p)["seq"] if p[:1] == b"{" else cbor2.loads(p)[3]
                for p in telemetry_payloads(col, dev)] == list(range(n)), "exact order, no gaps"
        online = statuses(col, dev)
        assert online and online[0]["online"] is True and online[0]["device_id"] == dev
        assert (link.counters.published, link.counters.acked) == (n, n)
        assert buf.stats().pending == 0
    finally:
        link.stop()
    try:
        assert col.wait_for(lambda ms: bool(ms) and statuses(col, dev)[-1]["online"] is False, 5), \
            "graceful stop publishes the offline status"
    finally:
        col.close()


def test_broker_restart_while_publishing_loses_nothing(private: MosquittoBroker, tmp_path: Path) -> None:
    dev = new_device()
    prime_session(private, f"col-{dev}", [telemetry_topic(dev)])
    col = MqttCollector(private.host, private.port, [telemetry_topic(dev)], client_id=f"col-{dev}")
    buf = DiskBuffer(tmp_path / "buf", FAST_BUF)
    link = MqttLink(fast_settings(dev, private.port), buf, lambda: status(dev), seed=1)
    pub = TelemetryPublisher(dev, buf)
    link.start()
    n = 400
    queued = threading.Event()

    def produce() -> None:
        for seq in range(n):
            pub.publish(window(dev, seq))
            if seq == 100:
                queued.set()
            time.sleep(0.004)

    producer = threading.Thread(target=produce)
    try:
        assert link.wait_connected(10)
        producer.start()
        assert queued.wait(10)
        private.stop()  # broker gone mid-stream, for ~1.5 s of windows
        time.sleep(1.5)
        assert not link.connected
        pending_during_outage = buf.stats().pending
        private.start()
        producer.join(30)
        assert link.wait_drained(30)
        rep = analyse(wait_for_count(col, dev, n, 15), range(n))
        print(f"\nsent={n} received={rep.received} lost={len(rep.lost)} duplicates={rep.duplicates} "
              f"pending_during_outage={pending_during_outage} counters={link.counters.as_dict()}")
        assert rep.lost == []
        assert rep.in_order
        assert rep.duplicates <= link.settings.inflight_window, "only PUBACKs lost with the broker"
        assert pending_during_outage > 50, "windows were really buffered during the outage"
        assert link.counters.disconnects >= 1 and link.counters.connect_failures >= 1
    finally:
        link.stop()
        col.close()


def test_agent_killed_and_restarted_on_same_buffer_loses_nothing(system_broker: tuple[str, int],
                                                                  tmp_path: Path) -> None:
    host, port = system_broker
    dev = new_device()
    col = MqttCollector(host, port, [telemetry_topic(dev), status_topic(dev)], client_id=f"col-{dev}",
                        clean_session=True)
    buf_dir = tmp_path / "buf"
    n = 600

    def spawn(start: int, count: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(CHILD), "--port", str(port), "--device", dev, "--buffer", str(buf_dir),
             "--start-seq", str(start), "--count", str(count), "--interval", "0.002"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    first = spawn(0, n)
    assert first.stdout is not None
    last_queued = -1
    for line in first.stdout:
        if line.startswith("queued "):
            last_queued = int(line.split()[1])
            if last_queued >= 300:
                break
    first.kill()  # SIGKILL: no goodbye, paho session and in-flight PUBACKs lost
    first.wait(10)
    assert col.wait_for(lambda ms: any(m.topic == status_topic(dev) and cbor2.loads(m.payload)["online"]
                                       is False for m in ms), 10), "broker published the last will"
    before_restart = len(telemetry_payloads(col, dev))
    # The child may have queued a few more than the last line we read: the buffer knows for sure.
    with DiskBuffer(buf_dir, FAST_BUF) as left:
        unacked = left.read_next(10_000)
    last_stored = cbor2.loads(unacked[-1].payload)[3] if unacked else last_queued
    assert last_stored >= last_queued

    second = spawn(last_stored + 1, n - last_stored - 1)
    assert second.stdout is not None
    try:
        for line in second.stdout:
            if line.strip() == "drained":
                break
        rep = analyse(wait_for_count(col, dev, n, 15), range(n))
        print(f"\nsent={n} received={rep.received} lost={len(rep.lost)} duplicates={rep.duplicates} "
              f"received_before_kill={before_restart} killed_after_stored={last_stored} "
              f"unacked_at_kill={len(unacked)}")
        assert rep.lost == []
        assert rep.in_order
        # Duplicates only for records published but not yet acknowledged when killed: at most the
        # in-flight window of the child (8).
        assert rep.duplicates <= 8
    finally:
        second.terminate()
        out, err = second.communicate(timeout=15)
        col.close()
    final = json.loads(next(ln for ln in out.splitlines() if ln.startswith("final "))[6:])
    assert final["link"]["connects"] == 1
    assert second.returncode == 0, err[-2000:]


def test_broker_down_at_start_agent_buffers_then_delivers(private: MosquittoBroker, tmp_path: Path) -> None:
    dev = new_device()
    prime_session(private, f"col-{dev}", [telemetry_topic(dev)])
    private.stop()
    buf = DiskBuffer(tmp_path / "buf", FAST_BUF)
    link = MqttLink(fast_settings(dev, private.port), buf, lambda: status(dev))
    pub = TelemetryPublisher(dev, buf)
    link.start()  # nobody listening on the port
    n = 120
    try:
        for seq in range(n):
            assert pub.publish(window(dev, seq)) is not None
        time.sleep(0.5)
        assert not link.connected and link.counters.connect_failures >= 1
        assert buf.stats().pending == n
        private.start()
        assert link.wait_connected(10)
        assert link.wait_drained(20)
        col = MqttCollector(private.host, private.port, [telemetry_topic(dev)], client_id=f"col-{dev}")
        rep = analyse(wait_for_count(col, dev, n, 10), range(n))
        col.close()
        print(f"\nsent={n} received={rep.received} lost={len(rep.lost)} duplicates={rep.duplicates} "
              f"connect_failures={link.counters.connect_failures}")
        assert rep.lost == [] and rep.in_order and rep.duplicates == 0
    finally:
        link.stop()


def test_byte_budget_exceeded_during_outage_drops_oldest_with_counter(private: MosquittoBroker,
                                                                      tmp_path: Path) -> None:
    dev = new_device()
    prime_session(private, f"col-{dev}", [telemetry_topic(dev), status_topic(dev)])
    private.stop()
    buf = DiskBuffer(tmp_path / "buf", BufferSettings(max_bytes=16 * 1024, segment_bytes=2048, fsync=False))
    link = MqttLink(fast_settings(dev, private.port), buf, lambda: status(dev),
                    extra_status=lambda: {"buffer_dropped": buf.stats().dropped_records})
    pub = TelemetryPublisher(dev, buf)
    link.start()
    n = 1000  # ~200 B each in CBOR: far more than 16 KiB
    try:
        for seq in range(n):
            assert pub.publish(window(dev, seq)) is not None
        dropped = buf.stats().dropped_records
        assert dropped > 0
        private.start()
        assert link.wait_drained(20)
        col = MqttCollector(private.host, private.port, [telemetry_topic(dev), status_topic(dev)],
                            client_id=f"col-{dev}")
        got = wait_for_count(col, dev, n - dropped, 10)
        seqs = [cbor2.loads(p)[3] for p in got]
        print(f"\nsent={n} dropped={dropped} received={len(seqs)} "
              f"lost_uncounted={n - dropped - len(set(seqs))}")
        assert seqs == list(range(dropped, n)), "exactly the newest n - dropped, in order"
        st = statuses(col, dev)
        col.close()
        assert st and st[-1]["online"] is True and st[-1]["buffer_dropped"] == dropped, \
            "the drop counter is reported in the status"
    finally:
        link.stop()


def test_bad_commands_are_counted_and_agent_keeps_publishing(system_broker: tuple[str, int],
                                                             tmp_path: Path) -> None:
    host, port = system_broker
    dev = new_device()
    col = MqttCollector(host, port, [telemetry_topic(dev)], client_id=f"col-{dev}", clean_session=True)
    buf = DiskBuffer(tmp_path / "buf", FAST_BUF)
    pings: list[str] = []
    intake = CommandIntake(dev)
    intake.register("cmd.ping", lambda c: pings.append(c.cmd_id))
    link = MqttLink(fast_settings(dev, port, clean_session=True), buf, lambda: status(dev), intake=intake)
    pub = TelemetryPublisher(dev, buf)
    server = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"srv-{dev}")
    server.connect(host, port)
    server.loop_start()
    link.start()
    try:
        assert link.wait_connected(10)
        time.sleep(0.2)  # let the cmd subscription settle
        for seq in range(100):
            pub.publish(window(dev, seq))
        good = encode(Ping(device_id=dev, cmd_id="ping-1", ts=1))
        bad = [
            b"\xff\xfe not a message",
            encode(Ping(device_id="other-device", cmd_id="x", ts=1)),
            json.dumps({**Ping(device_id=dev, cmd_id="v9", ts=1).model_dump(mode="json"), "v": 9}).encode(),
            json.dumps({**Ping(device_id=dev, cmd_id="u", ts=1).model_dump(mode="json"),
                        "type": "cmd.format_disk"}).encode(),
            good,
            good,  # QoS 1 redelivery / server retry
        ]
        for payload in bad:
            server.publish(cmd_topic(dev), payload, qos=1).wait_for_publish(5)
        for seq in range(100, 200):
            pub.publish(window(dev, seq))
        assert link.wait_drained(20)
        deadline = time.monotonic() + 5
        while intake.counters.received < len(bad) and time.monotonic() < deadline:
            time.sleep(0.02)
        c = intake.counters
        assert (c.malformed, c.wrong_device, c.unsupported_version, c.unknown_type) == (1, 1, 1, 1)
        assert (c.dispatched, c.duplicate) == (1, 1) and pings == ["ping-1"]
        rep = analyse(wait_for_count(col, dev, 200, 10), range(200))
        assert rep.lost == [] and rep.in_order and rep.duplicates == 0
        assert link.connected
    finally:
        link.stop()
        server.loop_stop()
        server.disconnect()
        col.close()


def test_wrong_password_is_refused_counted_and_buffer_kept(tmp_path: Path) -> None:
    dev = new_device()
    acl = [*MOSQUITTO_DEVICE_ACL, "user reader", "topic read tinyfleet/#"]
    broker = MosquittoBroker(tmp_path / "broker", users={dev: "right-pw", "reader": "r"}, acl_lines=acl)
    buf_dir = tmp_path / "buf"
    with broker:
        col = MqttCollector(broker.host, broker.port, [telemetry_topic(dev)], client_id=f"col-{dev}",
                            username="reader", password="r")
        buf = DiskBuffer(buf_dir, FAST_BUF)
        bad = MqttLink(fast_settings(dev, broker.port, password="wrong-pw"), buf, lambda: status(dev))
        pub = TelemetryPublisher(dev, buf)
        bad.start()
        for seq in range(50):
            pub.publish(window(dev, seq))
        deadline = time.monotonic() + 5
        while bad.counters.refused < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        bad.stop()
        assert bad.counters.refused >= 2 and bad.counters.connects == 0, "refused, retried, never crashed"
        assert buf.stats().pending == 50
        buf.close()

        buf = DiskBuffer(buf_dir, FAST_BUF)  # restart with the right credentials on the same buffer
        good = MqttLink(fast_settings(dev, broker.port, password="right-pw"), buf, lambda: status(dev))
        good.start()
        try:
            assert good.wait_drained(15)
            rep = analyse(wait_for_count(col, dev, 50, 10), range(50))
            assert rep.lost == [] and rep.in_order
        finally:
            good.stop()
            col.close()


def test_json_codec_end_to_end_and_status_refresh(system_broker: tuple[str, int], tmp_path: Path) -> None:
    host, port = system_broker
    dev = new_device()
    col = MqttCollector(host, port, [telemetry_topic(dev), status_topic(dev)], client_id=f"col-{dev}",
                        clean_session=True)
    buf = DiskBuffer(tmp_path / "buf", FAST_BUF)
    uptime = iter(range(1, 1000))
    link = MqttLink(fast_settings(dev, port, clean_session=True), buf,
                    lambda: status(dev).model_copy(update={"uptime_s": next(uptime)}), codec="json")
    pub = TelemetryPublisher(dev, buf, codec="json")
    link.start()
    try:
        assert link.wait_connected(10)
        for seq in range(20):
            pub.publish(window(dev, seq))
        link.request_status(reply_to="ping-9")  # answer to a Ping: a fresh retained status
        assert link.wait_drained(10)
        got = wait_for_count(col, dev, 20, 10)
        assert [json.loads(p)["seq"] for p in got] == list(range(20))
        assert col.wait_for(lambda ms: sum(m.topic == status_topic(dev) for m in ms) >= 2, 5)
        sts = [json.loads(m.payload) for m in col.snapshot() if m.topic == status_topic(dev)]
        assert [s["online"] for s in sts[:2]] == [True, True] and sts[1]["uptime_s"] > sts[0]["uptime_s"]
        assert sts[0]["reply_to"] is None and sts[1]["reply_to"] == "ping-9"
        assert Status.model_validate(sts[1]).reply_to == "ping-9", "still a valid v1 Status"
    finally:
        link.stop()
        col.close()


def test_publisher_refuses_programming_errors(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "buf", FAST_BUF)
    pub = TelemetryPublisher("dev-a", buf)
    with pytest.raises(ValueError, match="this agent is"):
        pub.publish(window("dev-b", 1))
    with pytest.raises(ValueError, match="not published through the buffer"):
        pub.publish(status("dev-a"))
    with pytest.raises(ValueError, match="not published through the buffer"):
        pub.publish(Ping(device_id="dev-a", cmd_id="c", ts=1))
    assert buf.stats().appended == 0


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(a, 0.5, 30.0, 0.5, rng) for a in range(12)]
    for a, d in enumerate(delays):
        cap = min(30.0, 0.5 * 2**a)
        assert cap * 0.5 <= d <= cap
    assert len({round(backoff_delay(3, 1, 60, 0.5, rng), 6) for _ in range(20)}) > 10, "jittered"
    assert backoff_delay(100, 1, 60, 0.0, rng) == 60.0


def test_bad_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(SectionError, match="device id"):
        MqttSettings(device_id="a/b")
    with pytest.raises(SectionError, match="reconnect_max_s"):
        MqttSettings(device_id="d", reconnect_min_s=10, reconnect_max_s=1)
    with pytest.raises(SectionError, match="port"):
        MqttSettings(device_id="d", port=70000)
    with pytest.raises(SectionError, match="protocol"):
        MqttSettings(device_id="d", protocol="3")
    with pytest.raises(SectionError, match="unrouted_retry_s"):
        MqttSettings(device_id="d", unrouted_retry_s=0)
    with pytest.raises(SectionError, match="does not exist"):
        TlsSettings(ca_file=tmp_path / "missing.pem")
    with pytest.raises(SectionError, match="together"):
        TlsSettings(cert_file=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="broker url"):
        MqttSettings.from_url("d", "http://broker:1883")
    s = MqttSettings.from_url("d", "mqtts://broker.example:8884")
    assert (s.host, s.port, s.tls is not None, s.effective_client_id) == ("broker.example", 8884, True, "d")
    assert MqttSettings.from_url("d", "mqtt://b").port == 1883


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_windows_nobody_subscribed_to_are_kept_and_resent_on_mqtt5(protocol: str, tmp_path: Path) -> None:
    """A broker that PUBACKs a window no subscriber took (e.g. the ingest workers' shared subscriptions are
    not back yet after a broker restart) has dropped it. On MQTT 5 the PUBACK says so (0x10) and the link
    keeps the record and sends it again; on MQTT 3.1.1 it cannot know: the control case loses them."""
    dev = new_device()
    with MosquittoBroker(tmp_path / "broker") as broker:
        buf = DiskBuffer(tmp_path / "buf", FAST_BUF)
        settings = fast_settings(
            dev, broker.port, clean_session=True, protocol=protocol, unrouted_retry_s=0.2
        )
        link = MqttLink(settings, buf, lambda: status(dev))
        pub = TelemetryPublisher(dev, buf)
        link.start()
        col: MqttCollector | None = None
        try:
            assert link.wait_connected(10)
            n = 40
            for seq in range(n):
                assert pub.publish(window(dev, seq)) is not None
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and link.counters.unrouted + link.counters.acked < n:
                time.sleep(0.05)
            col = MqttCollector(broker.host, broker.port, [telemetry_topic(dev)], client_id=f"col-{dev}",
                                clean_session=True)
            if protocol == "5":
                assert link.counters.unrouted >= n and link.counters.acked == 0
                assert buf.stats().pending == n, "nothing was acknowledged away"
                assert link.wait_drained(20)
                rep = analyse(wait_for_count(col, dev, n, 10), range(n))
                print(f"\nunrouted={link.counters.unrouted} received={rep.received} lost={len(rep.lost)}")
                assert rep.lost == [] and rep.in_order
            else:
                assert link.counters.acked == n and link.counters.unrouted == 0
                assert buf.stats().pending == 0
                time.sleep(0.5)
                assert telemetry_payloads(col, dev) == [], "MQTT 3.1.1: acknowledged and dropped"
        finally:
            link.stop()
            if col is not None:
                col.close()
