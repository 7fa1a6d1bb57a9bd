"""Encode/decode telemetry messages as JSON or CBOR (RFC 8949). No I/O.

Why CBOR rather than MessagePack: cbor2 is already a dependency of agent and server; CBOR is an IETF
standard with a fixed data model (no "ext" types to agree on), decoders exist for every MCU SDK
(TinyCBOR ships in Zephyr, ESP-IDF and RIOT), and it is what CoAP/LwM2M/SenML use, so a future
non-Python agent can speak it. Sizes are within a byte or two of MessagePack for the same items.

Wire forms (see docs/telemetry.md for the field-by-field layout):

* JSON: the pydantic model as an object, keys = field names.
* CBOR, metrics windows: a positional array ``[v, 1, device_id, seq, ...]`` with scaled integers
  (the size-critical message: ≤ 256 bytes with both histograms).
* CBOR, every other message: a map with the same keys as the JSON form.

``decode`` never raises anything but :class:`telemetry.errors.TelemetryDecodeError` subclasses.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import TypeAdapter, ValidationError

from telemetry.errors import (
    DeviceMismatch,
    MalformedPayload,
    SchemaViolation,
    TelemetryDecodeError,
    TelemetryEncodeError,
    WrongChannel,
)
from telemetry.schemas import CHANNEL_OF_TYPE, MESSAGE_CLASSES, Message, MetricsWindow
from telemetry.topics import Channel, TopicError, parse_topic

# The wire format's constants and framing live in telemetry.wire, shared with the device codec;
# re-exported here because callers import them from the codec.
from telemetry.wire import (
    BINARY_WINDOW_TARGET_BYTES,
    MAX_NESTING,
    MAX_PAYLOAD_BYTES,
    METRICS_LAYOUT,
    METRICS_TYPE_CODE,
    Codec,
    check_size,
    check_version_and_type,
    dumps_cbor,
    loads_cbor,
    loads_json,
    metrics_to_array,
    payload_bytes,
    sniff_codec,
)

_MESSAGE_ADAPTER: Final[TypeAdapter[Any]] = TypeAdapter(Message)


# ----------------------------------------------------------------------------- encoding


def encode_json(message: Any) -> bytes:
    """Compact JSON (UTF-8) of a message model."""
    if getattr(message, "type", None) not in MESSAGE_CLASSES:
        raise TelemetryEncodeError(f"not a telemetry message: {type(message).__name__}")
    return check_size(message.model_dump_json().encode())


def encode_cbor(message: Any) -> bytes:
    """CBOR: positional array for metrics windows, map for everything else."""
    if isinstance(message, MetricsWindow):
        return dumps_cbor(metrics_to_array(message))
    if getattr(message, "type", None) not in MESSAGE_CLASSES:
        raise TelemetryEncodeError(f"not a telemetry message: {type(message).__name__}")
    return dumps_cbor(message.model_dump(mode="json"))


def encode(message: Any, codec: Codec = "cbor") -> bytes:
    if codec == "cbor":
        return encode_cbor(message)
    if codec == "json":
        return encode_json(message)
    raise TelemetryEncodeError(f"unknown codec {codec!r}; use 'json' or 'cbor'")


# ----------------------------------------------------------------------------- decoding


def _violation(exc: ValidationError) -> SchemaViolation:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    loc = ".".join(str(p) for p in first["loc"])
    where = loc or "<root>"
    return SchemaViolation(
        f"invalid message ({len(errors)} error(s)); first at {where}: {first['msg']}", errors
    )


def _validate_python(obj: Any) -> Any:
    check_version_and_type(obj)
    try:
        return _MESSAGE_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise _violation(exc) from None
    except RecursionError:
        raise MalformedPayload("payload nests too deeply") from None


def decode_json(payload: bytes) -> Any:
    try:
        # Fast path: pydantic parses and validates in one go (Rust); diagnose only on failure.
        message = _MESSAGE_ADAPTER.validate_json(payload_bytes(payload))
        if "v" not in message.model_fields_set:  # `v` has a default for constructors, not on the wire
            raise SchemaViolation("missing schema version field 'v'")
        return message
    except ValidationError:
        pass
    except RecursionError:
        raise MalformedPayload("payload nests too deeply") from None
    return _validate_python(loads_json(payload))


def decode_cbor(payload: bytes) -> Any:
    return _validate_python(loads_cbor(payload))


def decode(
    payload: bytes,
    codec: Codec | Literal["auto"] = "auto",
    *,
    expected_device_id: str | None = None,
    expected_channel: Channel | None = None,
) -> Any:
    """Bytes -> message model. Raises only :class:`TelemetryDecodeError` subclasses.

    ``expected_device_id``: raise :class:`DeviceMismatch` if the message names another device
    (the agent passes its own id for commands, the server the id from the topic).
    ``expected_channel``: raise :class:`WrongChannel` if the type does not belong on that channel.
    """
    if codec == "auto":
        codec = sniff_codec(payload)
    if codec == "cbor":
        message = decode_cbor(payload)
    elif codec == "json":
        message = decode_json(payload)
    else:
        raise MalformedPayload(f"unknown codec {codec!r}")
    if expected_device_id is not None and message.device_id != expected_device_id:
        raise DeviceMismatch(expected_device_id, message.device_id)
    if expected_channel is not None and CHANNEL_OF_TYPE[message.type] != expected_channel:
        raise WrongChannel(message.type, expected_channel)
    return message


def decode_from_topic(topic: str, payload: bytes, codec: Codec | Literal["auto"] = "auto") -> Any:
    """Server ingest helper: the topic names device and channel; the payload must agree with both."""
    try:
        device_id, channel = parse_topic(topic)
    except TopicError as exc:
        raise SchemaViolation(f"bad topic: {exc}") from None
    return decode(payload, codec, expected_device_id=device_id, expected_channel=channel)


def binary_window_fits(message: MetricsWindow) -> bool:
    """True when the CBOR form is within the 256-byte radio budget."""
    return len(encode_cbor(message)) <= BINARY_WINDOW_TARGET_BYTES


__all__ = [
    "BINARY_WINDOW_TARGET_BYTES",
    "MAX_NESTING",
    "MAX_PAYLOAD_BYTES",
    "METRICS_LAYOUT",
    "METRICS_TYPE_CODE",
    "Codec",
    "TelemetryDecodeError",
    "binary_window_fits",
    "decode",
    "decode_cbor",
    "decode_from_topic",
    "decode_json",
    "encode",
    "encode_cbor",
    "encode_json",
    "sniff_codec",
]
