"""One received MQTT message -> :class:`Accepted` (a validated telemetry message) or :class:`Rejected`.

Pure and total: whatever bytes arrive (topic or payload), ``classify`` returns, never raises. The
worker stores Accepted messages and dead-letters Rejected ones, so every message ends in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fleet_server.ingest.dead_letter import DeadLetterReason
from telemetry.codec import MAX_PAYLOAD_BYTES, decode
from telemetry.errors import (
    DeviceMismatch,
    PayloadTooLarge,
    SchemaViolation,
    TelemetryDecodeError,
    UnknownMessageType,
    WrongChannel,
)
from telemetry.topics import DEVICE_CHANNELS, TopicError, parse_topic


@dataclass(frozen=True, slots=True)
class Accepted:
    device_id: str
    message: Any  # a telemetry.schemas device message (MetricsWindow, Status, events, OtaStatus)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: DeadLetterReason
    detail: str


class LookupFailed(RuntimeError):
    """The provisioning lookup itself failed (database down): retry later, do not dead-letter."""


def topic_text(topic: bytes | str) -> tuple[str, bool]:
    """The topic as text (lossless when valid UTF-8); ``False`` when it was not valid UTF-8."""
    if isinstance(topic, str):
        return topic, True
    try:
        return topic.decode("utf-8"), True
    except UnicodeDecodeError:
        return topic.decode("utf-8", errors="backslashreplace"), False


def _classify(topic: bytes | str, payload: bytes, is_known: Callable[[str], bool]) -> Accepted | Rejected:
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejected(
            DeadLetterReason.oversized, f"payload is {len(payload)} bytes, the limit is {MAX_PAYLOAD_BYTES}"
        )
    text, utf8 = topic_text(topic)
    if not utf8:
        return Rejected(DeadLetterReason.bad_topic, "topic is not valid UTF-8")
    try:
        device_id, channel = parse_topic(text)
    except TopicError as exc:
        return Rejected(DeadLetterReason.bad_topic, str(exc))
    if channel not in DEVICE_CHANNELS:
        return Rejected(DeadLetterReason.wrong_direction, f"channel {channel!r} is not published by devices")
    # Provisioning before decoding: an unknown sender's bytes are not worth a parse.
    try:
        known = is_known(device_id)
    except Exception as exc:
        raise LookupFailed(str(exc)) from exc
    if not known:
        return Rejected(DeadLetterReason.unknown_device, f"device {device_id!r} is not provisioned")
    try:
        message = decode(payload, expected_device_id=device_id, expected_channel=channel)
    except PayloadTooLarge as exc:
        return Rejected(DeadLetterReason.oversized, str(exc))
    except DeviceMismatch as exc:
        return Rejected(DeadLetterReason.device_mismatch, str(exc))
    except WrongChannel as exc:
        return Rejected(DeadLetterReason.wrong_channel, str(exc))
    except (SchemaViolation, UnknownMessageType) as exc:
        return Rejected(DeadLetterReason.schema_violation, str(exc))
    except TelemetryDecodeError as exc:
        return Rejected(DeadLetterReason.malformed, str(exc) or type(exc).__name__)
    return Accepted(device_id, message)


def classify(topic: bytes | str, payload: bytes, is_known: Callable[[str], bool]) -> Accepted | Rejected:
    """Validate one message; ``is_known(device_id)`` says whether the device is provisioned.

    Raises only :class:`LookupFailed` (``is_known`` failed); bad input of any kind is a Rejected.
    """
    try:
        return _classify(topic, bytes(payload), is_known)
    except LookupFailed:
        raise
    except Exception as exc:  # a decoder bug must cost one message, not the worker
        return Rejected(DeadLetterReason.malformed, f"unexpected {type(exc).__name__} while decoding")
