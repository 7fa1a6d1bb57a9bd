"""MQTT topic layout shared by agent, server and broker ACLs. Pure string handling, stdlib only.

Layout (one subtree per device, so Mosquitto's ``%u`` pattern ACLs can confine a device to it)::

    tinyfleet/v1/{device_id}/telemetry   device -> server   MetricsWindow            QoS 1
    tinyfleet/v1/{device_id}/status      device -> server   Status (heartbeat)       QoS 1 (retained)
    tinyfleet/v1/{device_id}/events      device -> server   FallbackSwitched, OtaStateChanged, ErrorEvent
    tinyfleet/v1/{device_id}/ota         device -> server   OtaStatus                QoS 1
    tinyfleet/v1/{device_id}/cmd         server -> device   UpdateAvailable, Rollback, SetShadowMode,
                                                            SetFallbackPolicy, Ping  QoS 1

The device id is also the device's MQTT username, which is what makes the broker ACL

    pattern write tinyfleet/v1/%u/#
    pattern read  tinyfleet/v1/%u/cmd

work. A device id therefore must not contain the MQTT wildcards ``+`` and ``#``, the level separator
``/``, must not start with ``$`` (reserved by brokers) and is bounded in length; we go further and allow
only ``[A-Za-z0-9_.-]`` so that ids are also safe in file names, URLs and SQL identifiers.
"""

from __future__ import annotations

import re
from typing import Final, Literal, get_args

ROOT: Final = "tinyfleet"
LAYOUT_VERSION: Final = "v1"
PREFIX: Final = f"{ROOT}/{LAYOUT_VERSION}"

Channel = Literal["telemetry", "status", "events", "ota", "cmd"]
CHANNELS: Final[tuple[str, ...]] = get_args(Channel)
DEVICE_CHANNELS: Final[tuple[str, ...]] = ("telemetry", "status", "events", "ota")  # device publishes
SERVER_CHANNELS: Final[tuple[str, ...]] = ("cmd",)  # server publishes, device subscribes

DEVICE_ID_MAX_LEN: Final = 36  # a UUID fits; also keeps a metrics window under 256 bytes of CBOR
DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,35}$"
_DEVICE_ID_RE: Final = re.compile(DEVICE_ID_PATTERN)
# Shared-subscription group names end up inside a topic filter too: same alphabet.
_GROUP_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,39}$")

# Broker ACL lines (Mosquitto acl_file syntax) that confine each device to its own subtree.
MOSQUITTO_DEVICE_ACL: Final[tuple[str, ...]] = (
    f"pattern write {PREFIX}/%u/#",
    f"pattern read {PREFIX}/%u/cmd",
)


class TopicError(ValueError):
    """A topic, device id or group name that does not fit the TinyFleet layout."""


class InvalidDeviceId(TopicError):
    pass


def is_valid_device_id(device_id: object) -> bool:
    return isinstance(device_id, str) and _DEVICE_ID_RE.fullmatch(device_id) is not None


def validate_device_id(device_id: object) -> str:
    """Return ``device_id`` unchanged or raise :class:`InvalidDeviceId` saying what is wrong."""
    if not isinstance(device_id, str):
        raise InvalidDeviceId(f"device id must be a string, got {type(device_id).__name__}")
    if not device_id:
        raise InvalidDeviceId("device id is empty")
    if len(device_id) > DEVICE_ID_MAX_LEN:
        raise InvalidDeviceId(
            f"device id has {len(device_id)} characters, at most {DEVICE_ID_MAX_LEN} allowed"
        )
    for bad, why in (("+", "MQTT wildcard"), ("#", "MQTT wildcard"), ("/", "topic level separator")):
        if bad in device_id:
            raise InvalidDeviceId(f"device id {device_id!r} contains {bad!r} ({why})")
    if _DEVICE_ID_RE.fullmatch(device_id) is None:
        raise InvalidDeviceId(
            f"device id {device_id!r} must start with a letter or digit and contain only A-Z a-z 0-9 _ . -"
        )
    return device_id


def _check_channel(channel: str) -> str:
    if channel not in CHANNELS:
        raise TopicError(f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}")
    return channel


def topic(device_id: str, channel: Channel) -> str:
    """``tinyfleet/v1/{device_id}/{channel}`` after validating both parts."""
    return f"{PREFIX}/{validate_device_id(device_id)}/{_check_channel(channel)}"


def telemetry_topic(device_id: str) -> str:
    return topic(device_id, "telemetry")


def status_topic(device_id: str) -> str:
    return topic(device_id, "status")


def events_topic(device_id: str) -> str:
    return topic(device_id, "events")


def ota_topic(device_id: str) -> str:
    return topic(device_id, "ota")


def cmd_topic(device_id: str) -> str:
    return topic(device_id, "cmd")


def parse_topic(value: str) -> tuple[str, Channel]:
    """Split a concrete topic into ``(device_id, channel)``; raise :class:`TopicError` otherwise."""
    if not isinstance(value, str):
        raise TopicError(f"topic must be a string, got {type(value).__name__}")
    parts = value.split("/")
    if len(parts) != 4 or parts[0] != ROOT or parts[1] != LAYOUT_VERSION:
        raise TopicError(f"topic {value!r} is not of the form {PREFIX}/<device_id>/<channel>")
    device_id, channel = parts[2], parts[3]
    validate_device_id(device_id)
    _check_channel(channel)
    return device_id, channel  # type: ignore[return-value]


def fleet_filter(channel: Channel) -> str:
    """Filter matching one channel of every device, e.g. ``tinyfleet/v1/+/telemetry``."""
    return f"{PREFIX}/+/{_check_channel(channel)}"


def device_filter(device_id: str) -> str:
    """Filter for everything a device publishes or receives: ``tinyfleet/v1/{device_id}/#``."""
    return f"{PREFIX}/{validate_device_id(device_id)}/#"


def shared_subscription(group: str, channel: Channel = "telemetry") -> str:
    """MQTT 5 shared subscription ``$share/{group}/tinyfleet/v1/+/{channel}``.

    Every server ingest worker subscribes with the same group; the broker hands each message to
    exactly one of them, which is how ingest scales out without a home-made queue.
    """
    if not isinstance(group, str) or _GROUP_RE.fullmatch(group) is None:
        raise TopicError(f"shared-subscription group {group!r} must match {_GROUP_RE.pattern}")
    return f"$share/{group}/{fleet_filter(channel)}"


def topic_matches(filter_: str, value: str) -> bool:
    """MQTT topic-filter matching (``+`` one level, ``#`` the rest) for routing and tests.

    Shared-subscription prefixes (``$share/<group>/``) are stripped first.
    """
    if filter_.startswith("$share/"):
        parts = filter_.split("/", 2)
        if len(parts) < 3:
            raise TopicError(f"malformed shared subscription {filter_!r}")
        filter_ = parts[2]
    f_levels, t_levels = filter_.split("/"), value.split("/")
    # Topics starting with '$' never match filters starting with a wildcard (MQTT 3.1.1 4.7.2).
    if value.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)
