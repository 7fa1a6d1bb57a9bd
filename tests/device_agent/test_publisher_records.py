"""The agent's telemetry goes out as device-codec records (no pydantic), byte-identical to the pydantic
messages older callers still pass; the status payload carries the schema-1.1 fields, validated."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest

from device_agent.disk_buffer import BufferSettings, DiskBuffer
from device_agent.mqtt_link import MqttLink, MqttSettings
from device_agent.publisher import TelemetryPublisher
from telemetry import codec, schemas
from telemetry import device_codec as dc

FIELDS = {"device_id": "dev-p", "ts": 5, "from_level": 0, "to_level": 1, "reason": "false_positives",
          "detail": "fp rate 0.6 > 0.5 for 2 windows"}


def test_records_and_pydantic_messages_are_buffered_as_the_same_bytes(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "buf", BufferSettings(fsync=False)) as buf:
        pub = TelemetryPublisher("dev-p", buf)
        assert pub.publish(dc.FallbackSwitched(**FIELDS)) is not None
        assert pub.publish(schemas.FallbackSwitched(**FIELDS)) is not None
        a, b = buf.read_next(10)
    assert a.payload == b.payload and a.topic == b.topic == "tinyfleet/v1/dev-p/events"
    assert codec.decode(a.payload).reason == "false_positives"
    assert pub.counters.queued == 2 and pub.counters.encode_errors == 0


def test_publisher_refuses_other_devices_and_status_records(tmp_path: Path) -> None:
    with DiskBuffer(tmp_path / "buf", BufferSettings(fsync=False)) as buf:
        pub = TelemetryPublisher("dev-p", buf)
        with pytest.raises(ValueError, match="from device 'other'"):
            pub.publish(dc.FallbackSwitched(**{**FIELDS, "device_id": "other"}))
        with pytest.raises(ValueError, match="not published through the buffer"):
            pub.publish(dc.Status(device_id="dev-p", ts=1, uptime_s=1, hardware_class="pi-4",
                                  agent_version="0.1.0"))
        assert buf.stats().pending == 0


def _link(tmp_path: Path, status: object, extras: dict) -> MqttLink:
    buf = DiskBuffer(tmp_path / "buf", BufferSettings(fsync=False))
    return MqttLink(MqttSettings(device_id="dev-p", port=1), buf, lambda: status, extra_status=lambda: extras)


@pytest.mark.parametrize("kind", ["record", "pydantic"])
def test_status_payload_carries_the_new_fields_validated(tmp_path: Path, kind: str) -> None:
    base = {"device_id": "dev-p", "ts": 1, "uptime_s": 2, "hardware_class": "pi-4", "agent_version": "0.1.0"}
    status = dc.Status(**base) if kind == "record" else schemas.Status(**base)
    extras = {"buffer_pending": 4, "buffer_dropped": 1, "cmd_rejected": 2, "windows": 9}
    link = _link(tmp_path, status, extras)
    payload = link._status_payload(online=False)
    msg = codec.decode(payload)  # the server's validator accepts it
    assert (msg.online, msg.buffer_pending, msg.buffer_dropped, msg.cmd_rejected) == (False, 4, 1, 2)
    assert cbor2.loads(payload)["windows"] == 9  # other extras still ride along as unknown keys
    link.buffer.close()


def test_a_bad_counter_is_refused_not_sent(tmp_path: Path) -> None:
    status = dc.Status(device_id="dev-p", ts=1, uptime_s=2, hardware_class="pi-4", agent_version="0.1.0")
    link = _link(tmp_path, status, {"buffer_pending": -1})
    with pytest.raises(ValueError, match="buffer_pending"):
        link._status_payload(online=True)
    link.buffer.close()
