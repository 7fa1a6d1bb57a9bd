"""classify(): every way a message can be bad has its dead-letter reason; nothing escapes as an exception."""

from __future__ import annotations

import json

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_support import window

from fleet_server.ingest.classify import Accepted, LookupFailed, Rejected, classify
from fleet_server.ingest.dead_letter import DeadLetterReason
from telemetry.codec import MAX_PAYLOAD_BYTES, encode_cbor, encode_json
from telemetry.schemas import Status
from telemetry.topics import cmd_topic, status_topic, telemetry_topic

KNOWN = {"dev-a", "dev-b"}


def is_known(device_id: str) -> bool:
    return device_id in KNOWN


def test_valid_window_in_both_codecs_is_accepted() -> None:
    w = window("dev-a", 3)
    for payload in (encode_cbor(w), encode_json(w)):
        out = classify(telemetry_topic("dev-a"), payload, is_known)
        assert isinstance(out, Accepted)
        assert out.device_id == "dev-a" and out.message == w


def _reason(topic: bytes | str, payload: bytes) -> DeadLetterReason:
    out = classify(topic, payload, is_known)
    assert isinstance(out, Rejected), out
    assert out.detail
    return out.reason


def test_each_kind_of_bad_message_gets_its_reason() -> None:
    good = encode_cbor(window("dev-a", 1))
    t = telemetry_topic("dev-a")
    assert _reason(t, b"\x00" * (MAX_PAYLOAD_BYTES + 1)) is DeadLetterReason.oversized
    assert _reason(b"tinyfleet/v1/\xff\xfe/telemetry", good) is DeadLetterReason.bad_topic
    assert _reason("tinyfleet/v2/dev-a/telemetry", good) is DeadLetterReason.bad_topic
    assert _reason(cmd_topic("dev-a"), good) is DeadLetterReason.wrong_direction
    assert _reason(telemetry_topic("dev-zz"), encode_cbor(window("dev-zz", 1))) is (
        DeadLetterReason.unknown_device
    )
    assert _reason(t, good[:-3]) is DeadLetterReason.malformed  # truncated CBOR
    assert _reason(t, b"not json {") is DeadLetterReason.malformed
    assert _reason(telemetry_topic("dev-b"), good) is DeadLetterReason.device_mismatch
    assert _reason(status_topic("dev-a"), good) is DeadLetterReason.wrong_channel
    bad = json.loads(encode_json(window("dev-a", 1)))
    bad["positives"] = bad["inferences"] + 1
    assert _reason(t, json.dumps(bad).encode()) is DeadLetterReason.schema_violation
    assert _reason(t, cbor2.dumps({"v": 1, "type": "metrics"})) in (
        DeadLetterReason.schema_violation,
        DeadLetterReason.malformed,
    )


def test_status_on_status_topic_is_accepted() -> None:
    st_msg = Status(
        device_id="dev-b", ts=1_795_000_000, uptime_s=5, hardware_class="esp32-s3", agent_version="1.0"
    )
    out = classify(status_topic("dev-b"), encode_cbor(st_msg), is_known)
    assert isinstance(out, Accepted) and out.message == st_msg


def test_lookup_failure_is_raised_not_dead_lettered() -> None:
    """A database outage must not turn good telemetry into dead letters."""

    def broken(_: str) -> bool:
        raise ConnectionError("db down")

    with pytest.raises(LookupFailed, match="db down"):
        classify(telemetry_topic("dev-a"), encode_cbor(window("dev-a", 1)), broken)


topics = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=60),
    st.builds(
        lambda d, c: f"tinyfleet/v1/{d}/{c}",
        st.sampled_from(["dev-a", "dev-b", "x", ""]),
        st.sampled_from(["telemetry", "status", "events", "ota", "cmd", "nope"]),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, payload=st.one_of(st.binary(max_size=600), st.just(encode_cbor(window("dev-a", 9)))))
def test_fuzz_never_raises_and_always_decides(topic: bytes | str, payload: bytes) -> None:
    out = classify(topic, payload, is_known)
    assert isinstance(out, (Accepted, Rejected))
    if isinstance(out, Accepted):
        assert out.device_id in KNOWN
    else:
        assert out.reason in DeadLetterReason and out.detail


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_valid_windows(data: st.DataObject) -> None:
    """Bit flips / truncations of a real window: accepted only if it still decodes to a valid window."""
    payload = bytearray(encode_cbor(window("dev-a", 5)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(payload)))
    out = classify(telemetry_topic("dev-a"), bytes(payload[:cut]), is_known)
    assert isinstance(out, (Accepted, Rejected))
