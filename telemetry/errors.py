"""Named errors of the telemetry package. Stdlib only, so the agent can import them for free.

Every way a payload can be wrong ends in a subclass of :class:`TelemetryDecodeError`; ingest workers
catch that one class, count the payload as malformed and keep it aside.
"""

from __future__ import annotations

from typing import Any


def brief(value: Any, limit: int = 80) -> str:
    """A short, always-safe repr for error messages (a hostile payload may carry a 9000-digit integer,
    whose plain repr raises ValueError)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<{value.bit_length()}-bit integer>"
    try:
        text = repr(value)
    except Exception:  # repr of exotic objects may fail; the message must not
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TelemetryError(ValueError):
    """Base of everything this package raises on purpose."""


class TelemetryEncodeError(TelemetryError):
    """A message could not be encoded (e.g. it would exceed MAX_PAYLOAD_BYTES)."""


class TelemetryDecodeError(TelemetryError):
    """Base of all decode failures."""


class PayloadTooLarge(TelemetryDecodeError, TelemetryEncodeError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload is {size} bytes, the limit is {limit}")
        self.size = size
        self.limit = limit


class MalformedPayload(TelemetryDecodeError):
    """Not parseable at all: garbage, truncated, not UTF-8, not JSON/CBOR, nesting too deep."""


class UnsupportedVersion(TelemetryDecodeError):
    """The message declares a MAJOR schema version this code does not know."""

    def __init__(self, version: Any, supported: frozenset[int]) -> None:
        super().__init__(
            f"schema version {brief(version)} is not supported (this decoder knows v{sorted(supported)})"
        )
        self.version = version
        self.supported = supported


class UnknownMessageType(TelemetryDecodeError):
    def __init__(self, type_: Any) -> None:
        super().__init__(f"unknown message type {brief(type_)}")
        self.type = type_


class SchemaViolation(TelemetryDecodeError):
    """Parsed, right version and type, but fields are missing, of the wrong type or out of bounds."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class DeviceMismatch(TelemetryDecodeError):
    """A message names another device than the one it was expected from / addressed to."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"message is for device {actual!r}, expected {expected!r}")
        self.expected = expected
        self.actual = actual


class WrongChannel(TelemetryDecodeError):
    """A valid message arrived on a topic channel that does not carry its type."""

    def __init__(self, type_: str, channel: str) -> None:
        super().__init__(f"message type {type_!r} does not belong on channel {channel!r}")
        self.type = type_
        self.channel = channel
