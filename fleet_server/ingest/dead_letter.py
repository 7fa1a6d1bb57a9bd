"""Why a message could not be stored, and the bounded dead-letter row kept for it."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from fleet_server.db.telemetry import DEAD_LETTER_DETAIL_MAX, DEAD_LETTER_PAYLOAD_MAX, DEAD_LETTER_TOPIC_MAX


class DeadLetterReason(enum.StrEnum):
    oversized = "oversized"  # > telemetry MAX_PAYLOAD_BYTES
    bad_topic = "bad_topic"  # not tinyfleet/v1/<device>/<channel>, or not valid UTF-8
    wrong_direction = "wrong_direction"  # a device-side subscriber saw a server channel (cmd)
    malformed = "malformed"  # not JSON/CBOR, truncated, too deep, unsupported version
    schema_violation = "schema_violation"  # decodes, but fails the telemetry schema
    device_mismatch = "device_mismatch"  # payload device_id differs from the topic's
    wrong_channel = "wrong_channel"  # message type does not belong on the topic's channel
    unknown_device = "unknown_device"  # device id not provisioned (unauthenticated)
    store_rejected = "store_rejected"  # valid telemetry the database still refused (constraint, range)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dead_letter_row(
    reason: DeadLetterReason, detail: str, topic: str, payload: bytes, received_at: dt.datetime
) -> dict[str, Any]:
    """Row for fleet_server.db.telemetry.DeadLetter; every field is bounded whatever came in."""
    return {
        "received_at": received_at,
        "reason": reason.value,
        "detail": _clip(detail, DEAD_LETTER_DETAIL_MAX),
        "topic": _clip(topic, DEAD_LETTER_TOPIC_MAX),
        "payload": bytes(payload[:DEAD_LETTER_PAYLOAD_MAX]),
        "payload_size": len(payload),
    }
