"""Minor revision 1.1 of the telemetry schema: the new optional fields and enumeration values.

* payloads written before the revision (no new keys) still decode, on the server and on the device, to
  the documented defaults;
* the new fields travel in both codecs, byte-identically on both sides;
* the new fields are validated like their neighbours (bad values named), and the largest possible
  UpdateAvailable (five 512-character URLs) still fits the payload limit.
"""

from __future__ import annotations

import json

import cbor2
import pytest

from telemetry import codec, schemas, wire
from telemetry import device_codec as dc
from telemetry.errors import SchemaViolation

SHA = "ab" * 32


def _ref(url: str, size: int = 10) -> dict:
    return {"url": url, "sha256": SHA, "size_bytes": size}


def _status_v10() -> dict:
    """A Status exactly as a 1.0 agent sent it (every 1.0 field, none of 1.1)."""
    return {
        "v": 1, "device_id": "dev-1", "type": "status", "ts": 100, "uptime_s": 5,
        "hardware_class": "pi-zero-2w", "agent_version": "0.1.0", "model": None, "active_slot": "a",
        "fallback_level": 0, "shadow_enabled": False, "battery_pct": 50.0, "charging": False,
        "rss_kb": 1000, "reply_to": None,
    }


def _update_v10() -> dict:
    return {
        "v": 1, "device_id": "dev-1", "type": "cmd.update", "cmd_id": "c1", "ts": 1, "release_id": "r1",
        "model_name": "kws", "target_version": 2, "hardware_class": "pi-zero-2w",
        "manifest": _ref("http://h/m"), "artifact": _ref("http://h/a"), "delta": None,
    }


@pytest.mark.parametrize("dump", [lambda o: json.dumps(o).encode(), cbor2.dumps], ids=["json", "cbor"])
def test_pre_revision_payloads_decode_to_the_defaults_on_both_sides(dump) -> None:
    status = dump(_status_v10())
    server = codec.decode(status)
    device = dc.decode(status)
    for m in (server, device):
        assert (m.online, m.buffer_pending, m.buffer_dropped, m.cmd_rejected) == (True, None, None, None)
    update = dump(_update_v10())
    server_cmd = codec.decode(update, expected_device_id="dev-1", expected_channel="cmd")
    device_cmd = dc.decode_command(update, device_id="dev-1")
    for m in (server_cmd, device_cmd):
        assert m.report is None and m.golden is None
    ota = {"v": 1, "device_id": "dev-1", "type": "ota_status", "ts": 1, "release_id": "r1",
           "target_version": 2, "state": "downloading"}
    assert codec.decode(dump(ota)).cmd_id is None
    assert dc.decode(dump(ota)).cmd_id is None


def test_new_status_and_ota_fields_round_trip_byte_identically() -> None:
    fields = {**_status_v10(), "online": False, "buffer_pending": 7, "buffer_dropped": 2, "cmd_rejected": 3}
    del fields["type"]
    server = schemas.Status(**{**fields, "battery_pct": 50.0})
    record = dc.Status(**fields)
    for c in ("cbor", "json"):
        assert dc.encode(record, c) == codec.encode(server, c)
        back = codec.decode(dc.encode(record, c))
        assert (back.online, back.buffer_pending, back.buffer_dropped, back.cmd_rejected) == (False, 7, 2, 3)
    changed = dc.OtaStateChanged(device_id="dev-1", ts=1, release_id="r1", from_state="idle",
                                 to_state="deferred", reason="battery 12 % < 30 %", cmd_id="c-9")
    assert codec.decode(dc.encode(changed)).cmd_id == "c-9"
    assert codec.decode(dc.encode(changed)).to_state == "deferred"
    status = dc.OtaStatus(device_id="dev-1", ts=1, release_id="r1", target_version=2, state="deferred",
                          cmd_id="c-9")
    assert dc.encode(status, "json") == codec.encode(
        schemas.OtaStatus(device_id="dev-1", ts=1, release_id="r1", target_version=2, state="deferred",
                          cmd_id="c-9"), "json")


@pytest.mark.parametrize("reason", ["false_positives", "load_failed", "invoke_failed"])
def test_agent_switch_reasons_are_wire_reasons(reason: str) -> None:
    rec = dc.FallbackSwitched(device_id="dev-1", ts=1, from_level=0, to_level=1, reason=reason)
    assert codec.decode(dc.encode(rec)).reason == reason


def test_update_companions_decode_on_the_device_and_the_largest_update_fits() -> None:
    url = "https://" + "x" * (wire.URL_MAX_LEN - len("https://"))
    obj = {**_update_v10(), "manifest": _ref(url), "artifact": _ref(url),
           "delta": {**_ref(url), "from_version": 1, "format": "bsdiff4"},
           "report": _ref(url, 2000), "golden": _ref(url, 3000)}
    obj["cmd_id"] = "c" * 64
    obj["release_id"] = "r" * 64
    for payload in (json.dumps(obj).encode(), cbor2.dumps(obj)):
        assert len(payload) <= wire.MAX_PAYLOAD_BYTES
        cmd = dc.decode_command(payload, device_id="dev-1")
        assert (cmd.report.size_bytes, cmd.golden.size_bytes) == (2000, 3000)
        assert dc.as_dict(cmd) == codec.decode(payload, expected_channel="cmd").model_dump()


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("report", {"url": "ftp://h/r", "sha256": SHA, "size_bytes": 1}, "report.url"),
        ("golden", {"url": "http://h/g", "sha256": "AB" * 32, "size_bytes": 1}, "golden.sha256"),
        ("golden", {"url": "http://h/g", "sha256": SHA, "size_bytes": 0}, "golden.size_bytes"),
        ("report", "http://h/r", "report"),
    ],
)
def test_bad_companion_refs_are_rejected_alike_naming_the_field(
    field: str, value: object, where: str
) -> None:
    payload = json.dumps({**_update_v10(), field: value}).encode()
    with pytest.raises(SchemaViolation, match=where.replace(".", r"\.")):
        dc.decode_command(payload, device_id="dev-1")
    with pytest.raises(SchemaViolation):
        codec.decode(payload, expected_channel="cmd")


@pytest.mark.parametrize(
    ("field", "value"),
    [("online", 1), ("buffer_pending", -1), ("buffer_dropped", wire.U32_MAX + 1), ("cmd_rejected", "3")],
)
def test_bad_new_status_fields_are_rejected_alike(field: str, value: object) -> None:
    payload = json.dumps({**_status_v10(), field: value}).encode()
    with pytest.raises(SchemaViolation, match=field):
        dc.decode(payload)
    with pytest.raises(SchemaViolation):
        codec.decode(payload)
