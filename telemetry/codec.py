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

import json
from typing import Any, Final, Literal

import cbor2
from pydantic import TypeAdapter, ValidationError

from telemetry.errors import (
    DeviceMismatch,
    MalformedPayload,
    PayloadTooLarge,
    SchemaViolation,
    TelemetryDecodeError,
    TelemetryEncodeError,
    UnknownMessageType,
    UnsupportedVersion,
    WrongChannel,
    brief,
)
from telemetry.schemas import (
    CHANNEL_OF_TYPE,
    MESSAGE_CLASSES,
    SUPPORTED_VERSIONS,
    VARIANTS,
    Message,
    MetricsWindow,
)
from telemetry.topics import Channel, TopicError, parse_topic

Codec = Literal["json", "cbor"]

# Hard limit on either side of the wire. Every message's fields are bounded so that no valid message
# comes near it (the largest, an UpdateAvailable with three 512-char URLs, is ~2 KB as JSON).
MAX_PAYLOAD_BYTES: Final = 4096
MAX_NESTING: Final = 8  # our deepest message nests 3 levels; anything deeper is hostile
METRICS_TYPE_CODE: Final = 1  # element [1] of the positional CBOR array
BINARY_WINDOW_TARGET_BYTES: Final = 256

_MESSAGE_ADAPTER: Final[TypeAdapter[Any]] = TypeAdapter(Message)
_VARIANT_CODE: Final = {name: i for i, name in enumerate(VARIANTS)}

# Positional layout of a metrics window (CBOR array). Index -> field; scaled fields noted.
METRICS_LAYOUT: Final[tuple[str, ...]] = (
    "v",
    "type",  # METRICS_TYPE_CODE
    "device_id",
    "seq",
    "window_start_s",
    "window_len_s",
    "duty_cycle",  # uint, x 10_000
    "battery_pct",  # uint, x 10, or null
    "battery_mv",
    "charging",
    "est_battery_life_min",
    "inferences",
    "positives",
    "false_positives",
    "latency_p50_us",
    "latency_p95_us",
    "latency_max_us",
    "model",  # [name, version, variant code]
    "fallback_level",
    "input_feature",
    "input_hist",
    "output_hist",
    "nonfinite_inputs",  # optional trailing (omitted when 0 and no shadow)
    "shadow",  # optional trailing: null | [cand_version, samples, agreements, cand_pos, cand_fp, p50, p95]
)
_METRICS_REQUIRED: Final = METRICS_LAYOUT.index("nonfinite_inputs")
_SHADOW_LAYOUT: Final = (
    "candidate_version",
    "samples",
    "agreements",
    "candidate_positives",
    "candidate_false_positives",
    "candidate_latency_p50_us",
    "candidate_latency_p95_us",
)


# ----------------------------------------------------------------------------- encoding


def _metrics_to_array(m: MetricsWindow) -> list[Any]:
    arr: list[Any] = [
        m.v,
        METRICS_TYPE_CODE,
        m.device_id,
        m.seq,
        m.window_start_s,
        m.window_len_s,
        round(m.duty_cycle * 10_000),
        None if m.battery_pct is None else round(m.battery_pct * 10),
        m.battery_mv,
        m.charging,
        m.est_battery_life_min,
        m.inferences,
        m.positives,
        m.false_positives,
        m.latency_p50_us,
        m.latency_p95_us,
        m.latency_max_us,
        [m.model.name, m.model.version, _VARIANT_CODE[m.model.variant]],
        m.fallback_level,
        m.input_feature,
        list(m.input_hist),
        list(m.output_hist),
    ]
    # Trailing optional elements are left off when they carry nothing: bytes matter on BLE/LoRa links.
    if m.shadow is not None:
        s = m.shadow
        arr += [m.nonfinite_inputs, [getattr(s, k) for k in _SHADOW_LAYOUT]]
    elif m.nonfinite_inputs:
        arr.append(m.nonfinite_inputs)
    return arr


def _check_size(data: bytes) -> bytes:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(data), MAX_PAYLOAD_BYTES)
    return data


def encode_json(message: Any) -> bytes:
    """Compact JSON (UTF-8) of a message model."""
    if getattr(message, "type", None) not in MESSAGE_CLASSES:
        raise TelemetryEncodeError(f"not a telemetry message: {type(message).__name__}")
    return _check_size(message.model_dump_json().encode())


def encode_cbor(message: Any) -> bytes:
    """CBOR: positional array for metrics windows, map for everything else."""
    if isinstance(message, MetricsWindow):
        return _check_size(cbor2.dumps(_metrics_to_array(message)))
    if getattr(message, "type", None) not in MESSAGE_CLASSES:
        raise TelemetryEncodeError(f"not a telemetry message: {type(message).__name__}")
    return _check_size(cbor2.dumps(message.model_dump(mode="json")))


def encode(message: Any, codec: Codec = "cbor") -> bytes:
    if codec == "cbor":
        return encode_cbor(message)
    if codec == "json":
        return encode_json(message)
    raise TelemetryEncodeError(f"unknown codec {codec!r}; use 'json' or 'cbor'")


# ----------------------------------------------------------------------------- decoding


def _payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, (bytearray, memoryview)):
        payload = bytes(payload)
    if not isinstance(payload, bytes):
        raise MalformedPayload(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(payload), MAX_PAYLOAD_BYTES)
    if not payload:
        raise MalformedPayload("empty payload")
    return payload


def _check_version_and_type(obj: Any) -> str:
    """Version first (a v2 message may have any shape), then the discriminator."""
    if not isinstance(obj, dict):
        raise SchemaViolation(f"a message must be an object/map, got {type(obj).__name__}")
    if "v" not in obj:
        raise SchemaViolation("missing schema version field 'v'")
    v = obj["v"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise SchemaViolation(f"schema version 'v' must be an integer, got {brief(v)}")
    if v not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(v, SUPPORTED_VERSIONS)
    type_ = obj.get("type")
    if not isinstance(type_, str) or type_ not in MESSAGE_CLASSES:
        raise UnknownMessageType(type_)
    return type_


def _violation(exc: ValidationError) -> SchemaViolation:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    loc = ".".join(str(p) for p in first["loc"])
    where = loc or "<root>"
    return SchemaViolation(
        f"invalid message ({len(errors)} error(s)); first at {where}: {first['msg']}", errors
    )


def _validate_python(obj: Any) -> Any:
    _check_version_and_type(obj)
    try:
        return _MESSAGE_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise _violation(exc) from None
    except RecursionError:
        raise MalformedPayload("payload nests too deeply") from None


def decode_json(payload: bytes) -> Any:
    data = _payload_bytes(payload)
    try:
        # Fast path: pydantic parses and validates in one go (Rust); diagnose only on failure.
        message = _MESSAGE_ADAPTER.validate_json(data)
        if "v" not in message.model_fields_set:  # `v` has a default for constructors, not on the wire
            raise SchemaViolation("missing schema version field 'v'")
        return message
    except ValidationError:
        pass
    except RecursionError:
        raise MalformedPayload("payload nests too deeply") from None
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int-digit limit
        raise MalformedPayload(f"not valid JSON: {exc}"[:300]) from None
    return _validate_python(obj)


def _unscale(value: Any, scale: int, limit: int, field: str) -> float:
    """Scaled integer -> float; anything else in a scaled slot is an error (a float would be mis-scaled)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaViolation(
            f"metrics field {field!r} must be an integer scaled by {scale}, got {brief(value)}"
        )
    if not 0 <= value <= limit * scale:  # also keeps huge bignums away from int/int -> OverflowError
        raise SchemaViolation(f"metrics field {field!r}: scaled value out of range 0..{limit * scale}")
    return value / scale


def _metrics_from_array(arr: list[Any]) -> dict[str, Any]:
    if len(arr) < _METRICS_REQUIRED:
        raise SchemaViolation(f"metrics array has {len(arr)} elements, needs at least {_METRICS_REQUIRED}")
    obj: dict[str, Any] = dict(zip(METRICS_LAYOUT, arr, strict=False))  # extra trailing elements ignored
    obj["type"] = "metrics"
    obj["duty_cycle"] = _unscale(obj["duty_cycle"], 10_000, 1, "duty_cycle")
    if obj["battery_pct"] is not None:
        obj["battery_pct"] = _unscale(obj["battery_pct"], 10, 100, "battery_pct")
    model = obj["model"]
    if not (isinstance(model, list) and len(model) == 3):
        raise SchemaViolation("metrics element 'model' must be [name, version, variant_code]")
    code = model[2]
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code < len(VARIANTS):
        raise SchemaViolation(f"unknown model variant code {brief(code)}")
    obj["model"] = {"name": model[0], "version": model[1], "variant": VARIANTS[code]}
    shadow = obj.get("shadow")
    if shadow is not None:
        if not isinstance(shadow, list) or len(shadow) < len(_SHADOW_LAYOUT):
            raise SchemaViolation("metrics element 'shadow' must be null or a 7-element array")
        obj["shadow"] = dict(zip(_SHADOW_LAYOUT, shadow, strict=False))
    return obj


_PLAIN_TYPES: Final = frozenset({dict, list, str, int, float, bool, type(None)})


def _reject_foreign_items(obj: Any) -> None:
    """Our CBOR uses no semantic tags, byte strings or simple values; cbor2 would turn tags into
    datetimes, Decimals, sets... which pydantic might accept as numbers. Refuse them up front."""
    stack = [obj]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind not in _PLAIN_TYPES:
            raise SchemaViolation(
                f"CBOR item of type {kind.__name__} is not allowed (tags, bytes, simple values)"
            )
        if kind is list:
            stack.extend(item)
        elif kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())


def decode_cbor(payload: bytes) -> Any:
    data = _payload_bytes(payload)
    try:
        obj = cbor2.loads(
            data,
            max_depth=MAX_NESTING,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
    except Exception as exc:  # cbor2 raises CBORDecodeError, but also e.g. ValueError from tag decoders
        raise MalformedPayload(f"not valid CBOR: {type(exc).__name__}: {exc}"[:300]) from None
    _reject_foreign_items(obj)
    if isinstance(obj, list):
        if len(obj) < 2:
            raise SchemaViolation("positional message needs at least [v, type_code]")
        v, code = obj[0], obj[1]
        if isinstance(v, bool) or not isinstance(v, int):
            raise SchemaViolation(f"schema version must be an integer, got {brief(v)}")
        if v not in SUPPORTED_VERSIONS:
            raise UnsupportedVersion(v, SUPPORTED_VERSIONS)
        if isinstance(code, bool) or not isinstance(code, int) or code != METRICS_TYPE_CODE:
            raise UnknownMessageType(code)
        obj = _metrics_from_array(obj)
    return _validate_python(obj)


def sniff_codec(payload: bytes) -> Codec:
    """JSON messages are objects (first non-blank byte ``{``); our CBOR is a map or array (0x80-0xbf)."""
    data = _payload_bytes(payload)
    first = data.lstrip(b" \t\r\n")[:1]
    if first == b"{":
        return "json"
    if 0x80 <= data[0] <= 0xBF:
        return "cbor"
    raise MalformedPayload(
        f"payload starts with byte 0x{data[0]:02x}: neither a JSON object nor a CBOR map/array"
    )


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
    "MAX_PAYLOAD_BYTES",
    "METRICS_LAYOUT",
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
