"""Telemetry publisher: encode a device message and append it to the disk buffer (never straight to MQTT).

The MQTT link replays the buffer in order and removes a record only after the broker's PUBACK, so
``publish`` returning means "durably queued", whether the broker is up or not. Messages are
``telemetry.device_codec`` records (encoded without pydantic); pydantic ``telemetry.schemas`` messages
are still accepted. Status heartbeats are the exception: they are state, not history, and go through
:meth:`MqttLink.publish_status` (retained).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from device_agent.disk_buffer import DiskBuffer, RecordTooLarge
from telemetry import device_codec
from telemetry.errors import TelemetryEncodeError
from telemetry.topics import topic, validate_device_id
from telemetry.wire import CHANNEL_OF_TYPE, Codec

log = logging.getLogger(__name__)

BUFFERED_CHANNELS = ("telemetry", "events", "ota")


@dataclass(slots=True)
class PublisherCounters:
    queued: int = 0  # appended to the disk buffer
    not_stored: int = 0  # the buffer could not store it even after dropping old records
    encode_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def encode_message(message: Any, codec: Codec) -> bytes:
    """A ``telemetry.device_codec`` record (the agent's own messages) with the device codec; a pydantic
    ``telemetry.schemas`` message (older callers) with ``telemetry.codec`` — the bytes are identical."""
    if isinstance(message, device_codec.RECORD_BASE):
        return device_codec.encode(message, codec)
    from telemetry.codec import encode  # pydantic: only for callers that built a pydantic message

    return encode(message, codec)


class TelemetryPublisher:
    """``publish(message)`` for metrics windows, events and OTA status of one device."""

    def __init__(
        self,
        device_id: str,
        buffer: DiskBuffer,
        *,
        codec: Codec = "cbor",
        on_queued: Callable[[], None] | None = None,
    ) -> None:
        self.device_id = validate_device_id(device_id)
        self.buffer = buffer
        self.codec: Codec = codec
        self.counters = PublisherCounters()
        self._on_queued = on_queued
        self._lock = threading.Lock()

    def publish(self, message: Any) -> int | None:
        """Durably queue ``message``; return its buffer seq, or None if it could not be stored.

        Raises ValueError for programming errors: another device's message, a status or a command.
        """
        msg_type = getattr(message, "type", None)
        channel = CHANNEL_OF_TYPE.get(msg_type) if isinstance(msg_type, str) else None
        if channel not in BUFFERED_CHANNELS:
            raise ValueError(
                f"message type {msg_type!r} is not published through the buffer "
                f"(buffered channels: {', '.join(BUFFERED_CHANNELS)}; "
                "status goes via MqttLink.request_status)"
            )
        if message.device_id != self.device_id:
            raise ValueError(
                f"message is from device {message.device_id!r}, this agent is {self.device_id!r}"
            )
        try:
            payload = encode_message(message, self.codec)
        except (TelemetryEncodeError, ValueError) as exc:  # ValueError: SchemaViolation of a record
            with self._lock:
                self.counters.encode_errors += 1
            log.error("could not encode %s message: %s", msg_type, exc)
            return None
        try:
            seq = self.buffer.append(topic(self.device_id, channel), payload)
        except RecordTooLarge as exc:
            seq = None
            log.error("%s message not stored: %s", msg_type, exc)
        with self._lock:
            if seq is None:
                self.counters.not_stored += 1
            else:
                self.counters.queued += 1
        if seq is not None and self._on_queued is not None:
            self._on_queued()
        return seq
