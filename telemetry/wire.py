"""The telemetry v1 wire format, pydantic-free: constants, patterns and framing shared by both codecs.

``telemetry.codec`` (server side, pydantic models) and ``telemetry.device_codec`` (device side, plain
dataclasses) import every constant of the format from here, so the two cannot drift apart on a limit,
a scale factor, a type code or the positional layout of a metrics window. Only the standard library and
cbor2 are imported (cbor2 lazily, inside :func:`loads_cbor`/:func:`dumps_cbor`).

The framing helpers (size limit, codec sniffing, CBOR hardening, version/type gate, positional metrics
array) are the steps both decoders take before schema validation; sharing them makes the decoders
reject the same payloads with the same named errors by construction.
"""

from __future__ import annotations

import io
import json
from typing import Any, Final, Literal

from telemetry.errors import (
    MalformedPayload,
    PayloadTooLarge,
    SchemaViolation,
    UnknownMessageType,
    UnsupportedVersion,
    brief,
)

Codec = Literal["json", "cbor"]

SCHEMA_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({SCHEMA_VERSION})

U8_MAX: Final = 255
U16_MAX: Final = 65_535
U32_MAX: Final = 4_294_967_295
MAX_HIST_BINS: Final = 16  # per histogram in a metrics window; keeps a window under 256 bytes of CBOR
MAX_FALLBACK_LEVEL: Final = 15

# Floats sent as scaled integers: quantised to these digits when a message is built, so that the
# scaled integer is exact and decode(encode(x)) == x for both codecs.
FRACTION_DIGITS: Final = 4
FRACTION_SCALE: Final = 10_000  # duty_cycle, sample_fraction: x * 10_000
PERCENT_DIGITS: Final = 1
PERCENT_SCALE: Final = 10  # battery_pct: x * 10

# Hard limit on either side of the wire. Every message's fields are bounded so that no valid message
# comes near it (the largest, an UpdateAvailable with five 512-char URLs, is ~3.3 KB as JSON).
MAX_PAYLOAD_BYTES: Final = 4096
MAX_NESTING: Final = 8  # our deepest message nests 3 levels; anything deeper is hostile
METRICS_TYPE_CODE: Final = 1  # element [1] of the positional CBOR array
BINARY_WINDOW_TARGET_BYTES: Final = 256

# String rules. Anchored with ^...$ for pydantic's Rust regex engine, where `$` is the end of the text;
# Python code must use re.fullmatch with them (re.search's `$` also matches before a trailing "\n").
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,31}$"  # hardware class, component, error code
MODEL_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,23}$"  # rides in every metrics window
IDENT_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"  # cmd / release ids
SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"
# "No whitespace" spelled out as the Unicode White_Space set (what Rust's \s means): Python's \s also
# matches U+001C..U+001F, so a `\s` here would make the two engines disagree on a URL.
_WHITE_SPACE: Final = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
URL_PATTERN: Final = f"^https?://[^{_WHITE_SPACE}]+$"
URL_MAX_LEN: Final = 512
TEXT_MAX_LEN: Final = 256

# Enumerations (the Literal types in telemetry.schemas must list the same values in the same order:
# the index of a variant is its code in the positional window; a test checks both agree).
VARIANTS: Final[tuple[str, ...]] = ("float32", "float16", "dynamic_int8", "full_int8", "rule")
VARIANT_CODE: Final[dict[str, int]] = {name: i for i, name in enumerate(VARIANTS)}
OTA_STATES: Final[tuple[str, ...]] = (
    "idle",
    "downloading",
    "downloaded",
    "verifying",
    "verified",
    "installing",
    "trial",
    "committed",
    "reverting",
    "reverted",
    "failed",
    "deferred",  # minor revision 1.1: download postponed by the device's energy policy
)
FALLBACK_REASONS: Final[tuple[str, ...]] = (
    "latency", "error", "battery", "memory", "health_check", "policy", "recovered", "manual",
    # minor revision 1.1: what device_agent.fallback.SwitchReason really distinguishes
    "false_positives", "load_failed", "invoke_failed",
)
FALLBACK_STEPS: Final[tuple[str, ...]] = ("primary", "previous", "smaller_variant", "rule")
SLOTS: Final[tuple[str, ...]] = ("a", "b")
DELTA_FORMATS: Final[tuple[str, ...]] = ("bsdiff4",)

CHANNEL_OF_TYPE: Final[dict[str, str]] = {
    "metrics": "telemetry",
    "status": "status",
    "fallback_switched": "events",
    "ota_state_changed": "events",
    "error": "events",
    "ota_status": "ota",
    "cmd.update": "cmd",
    "cmd.rollback": "cmd",
    "cmd.shadow": "cmd",
    "cmd.fallback_policy": "cmd",
    "cmd.ping": "cmd",
}
MESSAGE_TYPES: Final[frozenset[str]] = frozenset(CHANNEL_OF_TYPE)
COMMAND_TYPES: Final[tuple[str, ...]] = tuple(t for t, ch in CHANNEL_OF_TYPE.items() if ch == "cmd")

# Positional layout of a metrics window (CBOR array). Index -> field; scaled fields noted.
METRICS_LAYOUT: Final[tuple[str, ...]] = (
    "v",
    "type",  # METRICS_TYPE_CODE
    "device_id",
    "seq",
    "window_start_s",
    "window_len_s",
    "duty_cycle",  # uint, x FRACTION_SCALE
    "battery_pct",  # uint, x PERCENT_SCALE, or null
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
METRICS_REQUIRED: Final = METRICS_LAYOUT.index("nonfinite_inputs")
SHADOW_LAYOUT: Final[tuple[str, ...]] = (
    "candidate_version",
    "samples",
    "agreements",
    "candidate_positives",
    "candidate_false_positives",
    "candidate_latency_p50_us",
    "candidate_latency_p95_us",
)


def quantise_fraction(x: float) -> float:
    return round(x, FRACTION_DIGITS)


def quantise_percent(x: float) -> float:
    return round(x, PERCENT_DIGITS)


# ----------------------------------------------------------------------------- encoding


def metrics_to_array(m: Any) -> list[Any]:
    """Positional form of a metrics window; ``m`` is anything with the MetricsWindow attributes
    (the pydantic model or the device record), already validated and quantised."""
    model = m.model
    arr: list[Any] = [
        m.v,
        METRICS_TYPE_CODE,
        m.device_id,
        m.seq,
        m.window_start_s,
        m.window_len_s,
        round(m.duty_cycle * FRACTION_SCALE),
        None if m.battery_pct is None else round(m.battery_pct * PERCENT_SCALE),
        m.battery_mv,
        m.charging,
        m.est_battery_life_min,
        m.inferences,
        m.positives,
        m.false_positives,
        m.latency_p50_us,
        m.latency_p95_us,
        m.latency_max_us,
        [model.name, model.version, VARIANT_CODE[model.variant]],
        m.fallback_level,
        m.input_feature,
        list(m.input_hist),
        list(m.output_hist),
    ]
    # Trailing optional elements are left off when they carry nothing: bytes matter on BLE/LoRa links.
    if m.shadow is not None:
        s = m.shadow
        arr += [m.nonfinite_inputs, [getattr(s, k) for k in SHADOW_LAYOUT]]
    elif m.nonfinite_inputs:
        arr.append(m.nonfinite_inputs)
    return arr


def check_size(data: bytes) -> bytes:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(data), MAX_PAYLOAD_BYTES)
    return data


def dumps_cbor(obj: Any) -> bytes:
    import cbor2  # imported where used: schemas.py imports wire.py for constants only

    return check_size(cbor2.dumps(obj))


# ----------------------------------------------------------------------------- decoding


def payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, (bytearray, memoryview)):
        payload = bytes(payload)
    if not isinstance(payload, bytes):
        raise MalformedPayload(f"payload must be bytes, got {type(payload).__name__}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(len(payload), MAX_PAYLOAD_BYTES)
    if not payload:
        raise MalformedPayload("empty payload")
    return payload


def sniff_codec(payload: bytes) -> Codec:
    """JSON messages are objects (first non-blank byte ``{``); our CBOR is a map or array (0x80-0xbf)."""
    data = payload_bytes(payload)
    first = data.lstrip(b" \t\r\n")[:1]
    if first == b"{":
        return "json"
    if 0x80 <= data[0] <= 0xBF:
        return "cbor"
    raise MalformedPayload(
        f"payload starts with byte 0x{data[0]:02x}: neither a JSON object nor a CBOR map/array"
    )


def check_version_and_type(obj: Any) -> str:
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
    if not isinstance(type_, str) or type_ not in MESSAGE_TYPES:
        raise UnknownMessageType(type_)
    return type_


_PLAIN_TYPES: Final = frozenset({dict, list, str, int, float, bool, type(None)})


def _reject_foreign_items(obj: Any) -> None:
    """Our CBOR uses no semantic tags, byte strings or simple values; cbor2 would turn tags into
    datetimes, Decimals, sets... which a validator might accept as numbers. Refuse them up front."""
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
    if len(arr) < 2:
        raise SchemaViolation("positional message needs at least [v, type_code]")
    v, code = arr[0], arr[1]
    if isinstance(v, bool) or not isinstance(v, int):
        raise SchemaViolation(f"schema version must be an integer, got {brief(v)}")
    if v not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(v, SUPPORTED_VERSIONS)
    if isinstance(code, bool) or not isinstance(code, int) or code != METRICS_TYPE_CODE:
        raise UnknownMessageType(code)
    if len(arr) < METRICS_REQUIRED:
        raise SchemaViolation(f"metrics array has {len(arr)} elements, needs at least {METRICS_REQUIRED}")
    obj: dict[str, Any] = dict(zip(METRICS_LAYOUT, arr, strict=False))  # extra trailing elements ignored
    obj["type"] = "metrics"
    obj["duty_cycle"] = _unscale(obj["duty_cycle"], FRACTION_SCALE, 1, "duty_cycle")
    if obj["battery_pct"] is not None:
        obj["battery_pct"] = _unscale(obj["battery_pct"], PERCENT_SCALE, 100, "battery_pct")
    model = obj["model"]
    if not (isinstance(model, list) and len(model) == 3):
        raise SchemaViolation("metrics element 'model' must be [name, version, variant_code]")
    variant = model[2]
    if isinstance(variant, bool) or not isinstance(variant, int) or not 0 <= variant < len(VARIANTS):
        raise SchemaViolation(f"unknown model variant code {brief(variant)}")
    obj["model"] = {"name": model[0], "version": model[1], "variant": VARIANTS[variant]}
    shadow = obj.get("shadow")
    if shadow is not None:
        if not isinstance(shadow, list) or len(shadow) < len(SHADOW_LAYOUT):
            raise SchemaViolation("metrics element 'shadow' must be null or a 7-element array")
        obj["shadow"] = dict(zip(SHADOW_LAYOUT, shadow, strict=False))
    return obj


def loads_cbor(payload: bytes) -> dict[str, Any]:
    """CBOR bytes -> the message as a map (positional windows expanded), version and type checked.

    Refuses trailing bytes, indefinite-length items, duplicate keys, nesting deeper than MAX_NESTING and
    any item that is not map/array/text/int/float/bool/null. Raises only the named decode errors.
    """
    import cbor2

    data = payload_bytes(payload)
    stream = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(
            stream,
            max_depth=MAX_NESTING,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        ).decode()
    except Exception as exc:  # cbor2 raises CBORDecodeError, but also e.g. ValueError from tag decoders
        raise MalformedPayload(f"not valid CBOR: {type(exc).__name__}: {exc}"[:300]) from None
    # cbor2.loads() would silently ignore bytes after the first item; a payload is exactly one item.
    if stream.tell() < len(data):
        raise MalformedPayload(f"{len(data) - stream.tell()} bytes of trailing data after the CBOR item")
    _reject_foreign_items(obj)
    if isinstance(obj, list):
        obj = _metrics_from_array(obj)
    check_version_and_type(obj)
    return obj


def loads_json(payload: bytes) -> Any:
    """JSON bytes -> Python objects (``json.loads`` rules: UTF-8/16/32 detection, NaN/Infinity literals
    accepted here and refused by the validators). Not yet version/type checked."""
    data = payload_bytes(payload)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int-digit limit
        raise MalformedPayload(f"not valid JSON: {exc}"[:300]) from None
