"""Device-side telemetry codec without pydantic: plain dataclass records, hand-written validation.

Why it exists: pydantic and its first model add ~16 MB RSS, which a Pi-class agent (50 MB budget, ~43 MB
floor) cannot afford. :mod:`telemetry.schemas` stays THE contract and the server's validator; this
module is the device's own implementation of it, as a C firmware would have one, kept honest by
cross-check tests (``tests/telemetry/test_device_codec*.py``):

* what the device SENDS — :class:`MetricsWindow`, :class:`Status`, :class:`FallbackSwitched`,
  :class:`OtaStateChanged`, :class:`ErrorEvent`, :class:`OtaStatus` — :func:`encode` turns into exactly
  the bytes ``telemetry.codec.encode`` produces for the equivalent pydantic message (CBOR and JSON);
* what the device RECEIVES — :class:`UpdateAvailable`, :class:`Rollback`, :class:`SetShadowMode`,
  :class:`SetFallbackPolicy`, :class:`Ping` — :func:`decode_command` accepts exactly the payloads
  ``telemetry.codec.decode(payload, expected_device_id=..., expected_channel="cmd")`` accepts, to the
  same values, and rejects the others with the same named error class.

Records have the pydantic models' names, fields, field order, defaults and rules (strict types,
bounds, patterns, cross-field checks, float quantisation). They validate on construction and raise
:class:`telemetry.errors.SchemaViolation` (a ``ValueError``) naming the field. Every limit, pattern,
enumeration and the positional window layout come from :mod:`telemetry.wire`, shared with the
server codec. Imports: the standard library and cbor2 only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar, Final, Literal

from telemetry.errors import (
    DeviceMismatch,
    MalformedPayload,
    SchemaViolation,
    TelemetryEncodeError,
    WrongChannel,
    brief,
)
from telemetry.topics import DEVICE_ID_MAX_LEN, DEVICE_ID_PATTERN
from telemetry.wire import (
    COMMAND_TYPES,
    DELTA_FORMATS,
    FALLBACK_REASONS,
    FALLBACK_STEPS,
    IDENT_PATTERN,
    MAX_FALLBACK_LEVEL,
    MAX_HIST_BINS,
    MODEL_NAME_PATTERN,
    NAME_PATTERN,
    OTA_STATES,
    SCHEMA_VERSION,
    SHA256_PATTERN,
    SLOTS,
    TEXT_MAX_LEN,
    U8_MAX,
    U16_MAX,
    U32_MAX,
    URL_MAX_LEN,
    URL_PATTERN,
    VARIANTS,
    Codec,
    check_size,
    check_version_and_type,
    dumps_cbor,
    loads_cbor,
    loads_json,
    metrics_to_array,
    quantise_fraction,
    quantise_percent,
    sniff_codec,
)

Loc = tuple[str | int, ...]
Check = Callable[[Any, Loc], Any]  # returns the (normalised) value or raises SchemaViolation


def _fail(loc: Loc, msg: str) -> SchemaViolation:
    where = ".".join(str(p) for p in loc) or "<root>"
    return SchemaViolation(f"invalid message; at {where}: {msg}", [{"loc": loc, "msg": msg}])


# ----------------------------------------------------------------------------- field checks
# Each mirrors a pydantic strict-mode rule of telemetry.schemas: no str->int, no bool->int, ints
# accepted for floats, NaN/inf refused, bounds checked before quantisation.


def _int(lo: int, hi: int) -> Check:
    def check(v: Any, loc: Loc) -> int:
        if type(v) is int and lo <= v <= hi:  # the common case, first: windows are built per close
            return v
        if isinstance(v, bool) or not isinstance(v, int):
            raise _fail(loc, f"must be an integer, got {brief(v)}")
        if not lo <= v <= hi:
            raise _fail(loc, f"must be in {lo}..{hi}, got {brief(v)}")
        return int(v)  # an int subclass (IntEnum): stored, and so encoded, as the plain int

    return check


def _float(lo: float, hi: float, quantise: Callable[[float], float]) -> Check:
    def check(v: Any, loc: Loc) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(loc, f"must be a number, got {brief(v)}")
        if isinstance(v, float) and not math.isfinite(v):
            raise _fail(loc, f"must be finite, got {v}")
        if not lo <= v <= hi:  # compared before float(): a bignum must not overflow
            raise _fail(loc, f"must be in {lo}..{hi}, got {brief(v)}")
        return quantise(float(v))

    return check


_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")


def _str(pattern: str | None = None, max_len: int | None = None) -> Check:
    rx = re.compile(pattern) if pattern is not None else None

    def check(v: Any, loc: Loc) -> str:
        if not isinstance(v, str):
            raise _fail(loc, f"must be a string, got {brief(v)}")
        if not v.isascii() and _SURROGATE.search(v):  # JSON "\ud800" escapes; pydantic refuses them
            raise _fail(loc, "contains a lone surrogate (not valid Unicode text)")
        if max_len is not None and len(v) > max_len:
            raise _fail(loc, f"must have at most {max_len} characters, got {len(v)}")
        # fullmatch: the patterns are ^...$ for Rust's regex, where $ never matches before a "\n"
        if rx is not None and rx.fullmatch(v) is None:
            raise _fail(loc, f"{brief(v)} does not match {pattern}")
        return v

    return check


def _choice(values: tuple[Any, ...]) -> Check:
    def check(v: Any, loc: Loc) -> Any:
        if not any(type(v) is type(c) and v == c for c in values):
            raise _fail(loc, f"must be one of {', '.join(map(repr, values))}, got {brief(v)}")
        return v

    return check


def _bool(v: Any, loc: Loc) -> bool:
    if not isinstance(v, bool):
        raise _fail(loc, f"must be true or false, got {brief(v)}")
    return v


def _opt(inner: Check) -> Check:
    def check(v: Any, loc: Loc) -> Any:
        return None if v is None else inner(v, loc)

    return check


def _list(item: Check, min_len: int, max_len: int) -> Check:
    def check(v: Any, loc: Loc) -> list[Any]:
        if not isinstance(v, list):
            raise _fail(loc, f"must be a list, got {brief(v)}")
        if not min_len <= len(v) <= max_len:
            raise _fail(loc, f"must have {min_len}..{max_len} items, got {len(v)}")
        return [item(x, (*loc, i)) for i, x in enumerate(v)]

    return check


def _nested(cls: type[_Record]) -> Check:
    def check(v: Any, loc: Loc) -> _Record:
        if isinstance(v, cls):
            return v
        if isinstance(v, dict):
            try:
                return _from_mapping(cls, v)
            except SchemaViolation as exc:  # re-anchor the nested error at this field
                inner = exc.errors[0] if exc.errors else {"loc": (), "msg": str(exc)}
                raise _fail((*loc, *inner["loc"]), inner["msg"]) from None
        raise _fail(loc, f"must be an object ({cls.__name__}), got {brief(v)}")

    return check


U8: Final = _int(0, U8_MAX)
U16: Final = _int(0, U16_MAX)
U32: Final = _int(0, U32_MAX)
LEVEL: Final = _int(0, MAX_FALLBACK_LEVEL)
FRACTION: Final = _float(0.0, 1.0, quantise_fraction)
PERCENT: Final = _float(0.0, 100.0, quantise_percent)
DEVICE_ID: Final = _str(DEVICE_ID_PATTERN, DEVICE_ID_MAX_LEN)
NAME: Final = _str(NAME_PATTERN)
MODEL_NAME: Final = _str(MODEL_NAME_PATTERN)
IDENT: Final = _str(IDENT_PATTERN)
TEXT: Final = _str(None, TEXT_MAX_LEN)
URL: Final = _str(URL_PATTERN, URL_MAX_LEN)
SHA256: Final = _str(SHA256_PATTERN)
OTA_STATE: Final = _choice(OTA_STATES)
VERSION: Final = _choice((SCHEMA_VERSION,))


# ----------------------------------------------------------------------------- records


@dataclass(slots=True, frozen=True, kw_only=True)
class _Record:
    """Base of all records: checks every field on construction, then the cross-field rules."""

    _checks: ClassVar[dict[str, Check]] = {}

    def __post_init__(self) -> None:
        for name, check in self._checks.items():
            value = getattr(self, name)
            new = check(value, (name,))
            if new is not value:  # quantised float, copied list, record built from a dict
                object.__setattr__(self, name, new)
        self._consistent()

    def _consistent(self) -> None:
        """Cross-field rules (pydantic's model validators); raise SchemaViolation."""


@dataclass(slots=True, frozen=True, kw_only=True)
class ModelRef(_Record):
    name: str
    version: int
    variant: str
    _checks: ClassVar[dict[str, Check]] = {"name": MODEL_NAME, "version": U32, "variant": _choice(VARIANTS)}


@dataclass(slots=True, frozen=True, kw_only=True)
class _Message(_Record):
    v: int = SCHEMA_VERSION
    device_id: str
    _checks: ClassVar[dict[str, Check]] = {"v": VERSION, "device_id": DEVICE_ID}


# ----------------------------------------------------------------------------- device -> server


@dataclass(slots=True, frozen=True, kw_only=True)
class ShadowFigures(_Record):
    candidate_version: int
    samples: int
    agreements: int
    candidate_positives: int
    candidate_false_positives: int
    candidate_latency_p50_us: int
    candidate_latency_p95_us: int
    _checks: ClassVar[dict[str, Check]] = {
        k: U32
        for k in (
            "candidate_version",
            "samples",
            "agreements",
            "candidate_positives",
            "candidate_false_positives",
            "candidate_latency_p50_us",
            "candidate_latency_p95_us",
        )
    }

    def _consistent(self) -> None:
        if self.agreements > self.samples:
            raise _fail((), "agreements exceed samples")
        if self.candidate_positives > self.samples:
            raise _fail((), "candidate_positives exceed samples")
        if self.candidate_latency_p50_us > self.candidate_latency_p95_us:
            raise _fail((), "candidate latency p50 exceeds p95")


@dataclass(slots=True, frozen=True, kw_only=True)
class MetricsWindow(_Message):
    type: Literal["metrics"] = field(default="metrics", init=False)
    seq: int
    window_start_s: int
    window_len_s: int
    duty_cycle: float
    battery_pct: float | None = None
    battery_mv: int | None = None
    charging: bool = False
    est_battery_life_min: int | None = None
    inferences: int
    positives: int
    false_positives: int
    latency_p50_us: int
    latency_p95_us: int
    latency_max_us: int
    model: ModelRef
    fallback_level: int = 0
    input_feature: int = 0
    input_hist: list[int] = field(default_factory=list)
    output_hist: list[int] = field(default_factory=list)
    nonfinite_inputs: int = 0
    shadow: ShadowFigures | None = None
    _checks: ClassVar[dict[str, Check]] = _Message._checks | {
        "seq": U32,
        "window_start_s": U32,
        "window_len_s": _int(1, U16_MAX),
        "duty_cycle": FRACTION,
        "battery_pct": _opt(PERCENT),
        "battery_mv": _opt(U16),
        "charging": _bool,
        "est_battery_life_min": _opt(U32),
        "inferences": U32,
        "positives": U32,
        "false_positives": U32,
        "latency_p50_us": U32,
        "latency_p95_us": U32,
        "latency_max_us": U32,
        "model": _nested(ModelRef),
        "fallback_level": LEVEL,
        "input_feature": U8,
        "input_hist": _list(U32, 0, MAX_HIST_BINS),
        "output_hist": _list(U32, 0, MAX_HIST_BINS),
        "nonfinite_inputs": U32,
        "shadow": _opt(_nested(ShadowFigures)),
    }

    def _consistent(self) -> None:
        if self.positives > self.inferences:
            raise _fail((), "positives exceed inferences")
        if not self.latency_p50_us <= self.latency_p95_us <= self.latency_max_us:
            raise _fail((), "latency percentiles must satisfy p50 <= p95 <= max")
        if sum(self.input_hist) + self.nonfinite_inputs > self.inferences:
            raise _fail((), "input_hist counts more values than inferences")
        if sum(self.output_hist) > self.inferences:
            raise _fail((), "output_hist counts more scores than inferences")
        if self.shadow is not None and self.shadow.samples > self.inferences:
            raise _fail((), "shadow samples exceed inferences")

    @property
    def window_end_s(self) -> int:
        return self.window_start_s + self.window_len_s


@dataclass(slots=True, frozen=True, kw_only=True)
class Status(_Message):
    type: Literal["status"] = field(default="status", init=False)
    ts: int
    uptime_s: int
    hardware_class: str
    agent_version: str
    model: ModelRef | None = None
    active_slot: str | None = None
    fallback_level: int = 0
    shadow_enabled: bool = False
    battery_pct: float | None = None
    charging: bool = False
    rss_kb: int | None = None
    reply_to: str | None = None
    online: bool = True
    buffer_pending: int | None = None
    buffer_dropped: int | None = None
    cmd_rejected: int | None = None
    _checks: ClassVar[dict[str, Check]] = _Message._checks | {
        "ts": U32,
        "uptime_s": U32,
        "hardware_class": NAME,
        "agent_version": NAME,
        "model": _opt(_nested(ModelRef)),
        "active_slot": _opt(_choice(SLOTS)),
        "fallback_level": LEVEL,
        "shadow_enabled": _bool,
        "battery_pct": _opt(PERCENT),
        "charging": _bool,
        "rss_kb": _opt(U32),
        "reply_to": _opt(IDENT),
        "online": _bool,
        "buffer_pending": _opt(U32),
        "buffer_dropped": _opt(U32),
        "cmd_rejected": _opt(U32),
    }


@dataclass(slots=True, frozen=True, kw_only=True)
class FallbackSwitched(_Message):
    type: Literal["fallback_switched"] = field(default="fallback_switched", init=False)
    ts: int
    from_level: int
    to_level: int
    reason: str
    detail: str | None = None
    model: ModelRef | None = None
    _checks: ClassVar[dict[str, Check]] = _Message._checks | {
        "ts": U32,
        "from_level": LEVEL,
        "to_level": LEVEL,
        "reason": _choice(FALLBACK_REASONS),
        "detail": _opt(TEXT),
        "model": _opt(_nested(ModelRef)),
    }

    def _consistent(self) -> None:
        if self.from_level == self.to_level:
            raise _fail((), "from_level equals to_level: not a switch")


@dataclass(slots=True, frozen=True, kw_only=True)
class OtaStateChanged(_Message):
    type: Literal["ota_state_changed"] = field(default="ota_state_changed", init=False)
    ts: int
    release_id: str
    from_state: str
    to_state: str
    reason: str | None = None
    cmd_id: str | None = None
    _checks: ClassVar[dict[str, Check]] = _Message._checks | {
        "ts": U32,
        "release_id": IDENT,
        "from_state": OTA_STATE,
        "to_state": OTA_STATE,
        "reason": _opt(TEXT),
        "cmd_id": _opt(IDENT),
    }


@dataclass(slots=True, frozen=True, kw_only=True)
class ErrorEvent(_Message):
    type: Literal["error"] = field(default="error", init=False)
    ts: int
    component: str
    code: str
    message: str
    fatal: bool = False
    _checks: ClassVar[dict[str, Check]] = _Message._checks | {
        "ts": U32,
        "component": NAME,
        "code": NAME,
        "message": TEXT,
        "fatal": _bool,
    }


@dataclass(slots=True, frozen=True, kw_only=True)
class OtaStatus(_Message):
    type: Literal["ota_status"] = field(default="ota_status", init=False)
    ts: int
    release_id: str
    target_version: int
    from_version: int | None = None
    state: str
    via_delta: bool = False
    bytes_done: int = 0
    bytes_total: int = 0
    attempt: int = 1
    error: str | None = None
    cmd_id: str | None = None
    _checks: ClassVar[dict[str, Check]] = _Message._checks | {
        "ts": U32,
        "release_id": IDENT,
        "target_version": U32,
        "from_version": _opt(U32),
        "state": OTA_STATE,
        "via_delta": _bool,
        "bytes_done": U32,
        "bytes_total": U32,
        "attempt": _int(1, U8_MAX),
        "error": _opt(TEXT),
        "cmd_id": _opt(IDENT),
    }

    def _consistent(self) -> None:
        if self.bytes_total and self.bytes_done > self.bytes_total:
            raise _fail((), "bytes_done exceeds bytes_total")


# ----------------------------------------------------------------------------- server -> device


@dataclass(slots=True, frozen=True, kw_only=True)
class ArtifactRef(_Record):
    url: str
    sha256: str
    size_bytes: int
    _checks: ClassVar[dict[str, Check]] = {"url": URL, "sha256": SHA256, "size_bytes": _int(1, U32_MAX)}


@dataclass(slots=True, frozen=True, kw_only=True)
class DeltaRef(ArtifactRef):
    from_version: int
    format: str = "bsdiff4"
    _checks: ClassVar[dict[str, Check]] = ArtifactRef._checks | {
        "from_version": U32,
        "format": _choice(DELTA_FORMATS),
    }


@dataclass(slots=True, frozen=True, kw_only=True)
class _Command(_Message):
    cmd_id: str
    ts: int
    _checks: ClassVar[dict[str, Check]] = _Message._checks | {"cmd_id": IDENT, "ts": U32}


@dataclass(slots=True, frozen=True, kw_only=True)
class UpdateAvailable(_Command):
    type: Literal["cmd.update"] = field(default="cmd.update", init=False)
    release_id: str
    model_name: str
    target_version: int
    hardware_class: str
    manifest: ArtifactRef
    artifact: ArtifactRef
    delta: DeltaRef | None = None
    report: ArtifactRef | None = None
    golden: ArtifactRef | None = None
    _checks: ClassVar[dict[str, Check]] = _Command._checks | {
        "release_id": IDENT,
        "model_name": MODEL_NAME,
        "target_version": U32,
        "hardware_class": NAME,
        "manifest": _nested(ArtifactRef),
        "artifact": _nested(ArtifactRef),
        "delta": _opt(_nested(DeltaRef)),
        "report": _opt(_nested(ArtifactRef)),
        "golden": _opt(_nested(ArtifactRef)),
    }


@dataclass(slots=True, frozen=True, kw_only=True)
class Rollback(_Command):
    type: Literal["cmd.rollback"] = field(default="cmd.rollback", init=False)
    release_id: str | None = None
    to_version: int | None = None
    reason: str
    _checks: ClassVar[dict[str, Check]] = _Command._checks | {
        "release_id": _opt(IDENT),
        "to_version": _opt(U32),
        "reason": TEXT,
    }


@dataclass(slots=True, frozen=True, kw_only=True)
class SetShadowMode(_Command):
    type: Literal["cmd.shadow"] = field(default="cmd.shadow", init=False)
    enabled: bool
    sample_fraction: float = 0.0
    candidate_version: int | None = None
    _checks: ClassVar[dict[str, Check]] = _Command._checks | {
        "enabled": _bool,
        "sample_fraction": FRACTION,
        "candidate_version": _opt(U32),
    }

    def _consistent(self) -> None:
        if self.enabled and self.sample_fraction <= 0.0:
            raise _fail((), "shadow mode enabled with sample_fraction 0")


@dataclass(slots=True, frozen=True, kw_only=True)
class SetFallbackPolicy(_Command):
    type: Literal["cmd.fallback_policy"] = field(default="cmd.fallback_policy", init=False)
    chain: list[str]
    max_latency_us: int | None = None
    max_consecutive_errors: int = 3
    min_battery_pct: float | None = None
    recover_after_s: int = 300
    _checks: ClassVar[dict[str, Check]] = _Command._checks | {
        "chain": _list(_choice(FALLBACK_STEPS), 1, 4),
        "max_latency_us": _opt(U32),
        "max_consecutive_errors": _int(1, 1000),
        "min_battery_pct": _opt(PERCENT),
        "recover_after_s": _int(0, 86_400),
    }


@dataclass(slots=True, frozen=True, kw_only=True)
class Ping(_Command):
    type: Literal["cmd.ping"] = field(default="cmd.ping", init=False)


RECORD_BASE: Final = _Message  # isinstance(x, RECORD_BASE): x is a device-codec message record

DeviceMessage = MetricsWindow | Status | FallbackSwitched | OtaStateChanged | ErrorEvent | OtaStatus
Command = UpdateAvailable | Rollback | SetShadowMode | SetFallbackPolicy | Ping
Message = DeviceMessage | Command



def _type_of(cls: type[_Message]) -> str:
    # slots=True replaces a field's class-level default with a slot descriptor: read it from the field.
    return next(f.default for f in fields(cls) if f.name == "type")  # type: ignore[return-value]


RECORD_CLASSES: Final[dict[str, type[_Message]]] = {
    _type_of(cls): cls
    for cls in (
        MetricsWindow,
        Status,
        FallbackSwitched,
        OtaStateChanged,
        ErrorEvent,
        OtaStatus,
        UpdateAvailable,
        Rollback,
        SetShadowMode,
        SetFallbackPolicy,
        Ping,
    )
}


# ----------------------------------------------------------------------------- record <-> wire dict

_INIT_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}  # class -> ((name, required), ...)
_ALL_FIELDS: dict[type, tuple[str, ...]] = {}  # class -> field names in wire (declaration) order


def _init_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    out = _INIT_FIELDS.get(cls)
    if out is None:
        out = tuple((f.name, _required(f)) for f in fields(cls) if f.init)
        _INIT_FIELDS[cls] = out
    return out


def _required(f: Field[Any]) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _from_mapping(cls: type[_Record], obj: dict[Any, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for name, required in _init_fields(cls):
        if name in obj:
            kwargs[name] = obj[name]
        elif required:
            raise _fail((name,), "field required")
    return cls(**kwargs)


def as_dict(record: _Record) -> dict[str, Any]:
    """The record as the JSON object / CBOR map of the wire: every field, declaration order."""
    cls = type(record)
    names = _ALL_FIELDS.get(cls)
    if names is None:
        names = tuple(f.name for f in fields(cls))
        _ALL_FIELDS[cls] = names
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(record, name)
        if isinstance(value, _Record):
            value = as_dict(value)
        elif isinstance(value, list):
            value = list(value)
        out[name] = value
    return out


# ----------------------------------------------------------------------------- encode / decode


def encode(record: Any, codec: Codec = "cbor") -> bytes:
    """Record -> bytes, identical to ``telemetry.codec.encode`` of the equivalent pydantic message.

    Raises :class:`TelemetryEncodeError` for non-records and unknown codecs,
    :class:`telemetry.errors.PayloadTooLarge` above MAX_PAYLOAD_BYTES.
    """
    if not isinstance(record, _Message):
        raise TelemetryEncodeError(f"not a telemetry record: {type(record).__name__}")
    if codec == "cbor":
        if isinstance(record, MetricsWindow):
            return dumps_cbor(metrics_to_array(record))
        return dumps_cbor(as_dict(record))
    if codec == "json":
        # Compact, raw UTF-8 (records hold no lone surrogates, no NaN): what pydantic's serialiser writes.
        return check_size(json.dumps(as_dict(record), ensure_ascii=False, separators=(",", ":")).encode())
    raise TelemetryEncodeError(f"unknown codec {codec!r}; use 'json' or 'cbor'")


def decode(
    payload: bytes, codec: Codec | Literal["auto"] = "auto", *, expected_device_id: str | None = None
) -> Message:
    """Bytes -> record of any message kind. Raises only ``TelemetryDecodeError`` subclasses."""
    if codec == "auto":
        codec = sniff_codec(payload)
    if codec == "cbor":
        obj = loads_cbor(payload)
    elif codec == "json":
        obj = loads_json(payload)
    else:
        raise MalformedPayload(f"unknown codec {codec!r}")
    type_ = check_version_and_type(obj)
    record = _from_mapping(RECORD_CLASSES[type_], obj)
    if expected_device_id is not None and record.device_id != expected_device_id:
        raise DeviceMismatch(expected_device_id, record.device_id)
    return record


def record_from_dict(obj: dict[str, Any]) -> Message:
    """A message already parsed into a dict (e.g. a command an agent persisted with :func:`as_dict`)
    -> its record; version, type and every field checked as :func:`decode` would."""
    type_ = check_version_and_type(obj)
    return _from_mapping(RECORD_CLASSES[type_], obj)  # type: ignore[no-any-return]


def decode_command(payload: bytes, *, device_id: str) -> Command:
    """A payload from this device's ``cmd`` topic -> command record.

    Raises PayloadTooLarge, MalformedPayload, UnsupportedVersion, UnknownMessageType, SchemaViolation,
    DeviceMismatch (addressed to another device) or WrongChannel (a valid device->server message),
    exactly as ``telemetry.codec.decode(payload, expected_device_id=device_id, expected_channel="cmd")``.
    """
    record = decode(payload, expected_device_id=device_id)
    if record.type not in COMMAND_TYPES:
        raise WrongChannel(record.type, "cmd")
    return record  # type: ignore[return-value]


__all__ = [
    "RECORD_BASE",
    "RECORD_CLASSES",
    "ArtifactRef",
    "Command",
    "DeltaRef",
    "DeviceMessage",
    "ErrorEvent",
    "FallbackSwitched",
    "Message",
    "MetricsWindow",
    "ModelRef",
    "OtaStateChanged",
    "OtaStatus",
    "Ping",
    "Rollback",
    "SetFallbackPolicy",
    "SetShadowMode",
    "ShadowFigures",
    "Status",
    "UpdateAvailable",
    "as_dict",
    "decode",
    "decode_command",
    "encode",
    "record_from_dict",
]
