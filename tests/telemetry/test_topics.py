"""Topic layout, device-id validation and filter helpers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telemetry_strategies import device_ids

from telemetry.topics import (
    CHANNELS,
    MOSQUITTO_DEVICE_ACL,
    InvalidDeviceId,
    TopicError,
    cmd_topic,
    device_filter,
    fleet_filter,
    is_valid_device_id,
    parse_topic,
    shared_subscription,
    telemetry_topic,
    topic,
    topic_matches,
    validate_device_id,
)


def test_layout() -> None:
    assert telemetry_topic("pi-0042") == "tinyfleet/v1/pi-0042/telemetry"
    assert cmd_topic("pi-0042") == "tinyfleet/v1/pi-0042/cmd"
    assert [topic("d1", c) for c in CHANNELS] == [
        "tinyfleet/v1/d1/telemetry",
        "tinyfleet/v1/d1/status",
        "tinyfleet/v1/d1/events",
        "tinyfleet/v1/d1/ota",
        "tinyfleet/v1/d1/cmd",
    ]
    assert fleet_filter("status") == "tinyfleet/v1/+/status"
    assert device_filter("d1") == "tinyfleet/v1/d1/#"
    assert shared_subscription("ingest") == "$share/ingest/tinyfleet/v1/+/telemetry"
    assert shared_subscription("ingest", "events") == "$share/ingest/tinyfleet/v1/+/events"
    assert MOSQUITTO_DEVICE_ACL == ("pattern write tinyfleet/v1/%u/#", "pattern read tinyfleet/v1/%u/cmd")


@settings(max_examples=100, deadline=None, derandomize=True)
@given(device_ids, st.sampled_from(CHANNELS))
def test_build_and_parse_round_trip(device_id: str, channel: str) -> None:
    t = topic(device_id, channel)  # type: ignore[arg-type]
    assert parse_topic(t) == (device_id, channel)
    assert topic_matches(fleet_filter(channel), t)  # type: ignore[arg-type]
    assert topic_matches(shared_subscription("g1", channel), t)  # type: ignore[arg-type]
    assert topic_matches(device_filter(device_id), t)
    assert not topic_matches(device_filter(device_id + "x"), t)


@pytest.mark.parametrize(
    ("device_id", "needle"),
    [
        ("", "empty"),
        ("a+b", "'+'"),
        ("a#b", "'#'"),
        ("a/b", "'/'"),
        ("x" * 37, "at most 36"),
        ("$SYS", "must start with a letter or digit"),
        ("-lead", "must start with a letter or digit"),
        ("has space", "only A-Z"),
        ("ümlaut", "only A-Z"),
        ("nul\x00", "only A-Z"),
        ("trailing-newline\n", "only A-Z"),
        (42, "must be a string"),
    ],
)
def test_device_id_validation_names_the_problem(device_id: object, needle: str) -> None:
    assert not is_valid_device_id(device_id)
    with pytest.raises(InvalidDeviceId, match=re.escape(needle)):
        validate_device_id(device_id)
    with pytest.raises(TopicError):
        topic(device_id, "telemetry")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        "tinyfleet/v1/d1",
        "tinyfleet/v1/d1/telemetry/extra",
        "tinyfleet/v2/d1/telemetry",
        "other/v1/d1/telemetry",
        "tinyfleet/v1/+/telemetry",
        "tinyfleet/v1/d1/firmware",
        "tinyfleet/v1//telemetry",
    ],
)
def test_parse_rejects_foreign_topics(bad: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(bad)


def test_topic_matching_rules() -> None:
    assert topic_matches("tinyfleet/v1/#", "tinyfleet/v1")  # '#' also matches the parent level
    assert topic_matches("tinyfleet/v1/+/cmd", "tinyfleet/v1/d1/cmd")
    assert not topic_matches("tinyfleet/v1/+/cmd", "tinyfleet/v1/d1/cmd/x")
    assert not topic_matches("tinyfleet/v1/+/cmd", "tinyfleet/v1/d1/telemetry")
    assert not topic_matches("#", "$SYS/broker/uptime")  # '$' topics never match leading wildcards
    for bad_group in ("a/b", "g+", "", "#"):
        with pytest.raises(TopicError):
            shared_subscription(bad_group)
    with pytest.raises(TopicError):
        fleet_filter("nope")  # type: ignore[arg-type]
