"""Versioned message schemas (pydantic v2) exchanged between device agents and the fleet server.

Conventions, the same for every message:

* ``v`` is the MAJOR schema version (currently 1). Minor revisions only add optional fields; older
  decoders ignore unknown JSON keys and trailing CBOR array elements. A message with another major
  version is rejected with :class:`telemetry.errors.UnsupportedVersion`.
* ``type`` is the discriminator (``"metrics"``, ``"status"``, ``"cmd.update"``, ...).
* ``device_id`` is on every message, commands included, so a receiver can detect a message meant
  for another device (see :func:`telemetry.codec.decode`'s ``expected_device_id``).
* Units are in the field names: ``_s`` seconds, ``_us`` microseconds, ``_mv`` millivolts,
  ``_min`` minutes, ``_pct`` percent 0..100, ``_kb`` KiB; timestamps are integer Unix seconds.
* Floats that the binary codec sends as scaled integers are quantised on validation (duty cycle and
  fractions to 1e-4, percentages to 0.1) so that ``decode(encode(x)) == x`` holds for both codecs.
* Models are strict (no str->int or bool->int coercion), frozen and reject NaN/inf.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from telemetry.topics import DEVICE_ID_MAX_LEN, DEVICE_ID_PATTERN, Channel

# Limits, patterns and enumerations of the wire format are defined once, in the pydantic-free
# telemetry.wire (the device codec uses them too); re-exported here for existing importers.
from telemetry.wire import CHANNEL_OF_TYPE as _WIRE_CHANNEL_OF_TYPE
from telemetry.wire import (
    IDENT_PATTERN,
    MAX_FALLBACK_LEVEL,
    MAX_HIST_BINS,
    MODEL_NAME_PATTERN,
    NAME_PATTERN,
    SCHEMA_VERSION,
    SHA256_PATTERN,
    TEXT_MAX_LEN,
    U8_MAX,
    U16_MAX,
    U32_MAX,
    URL_MAX_LEN,
    URL_PATTERN,
    quantise_fraction,
    quantise_percent,
)
from telemetry.wire import (
    SUPPORTED_VERSIONS as SUPPORTED_VERSIONS,
)

DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN, max_length=DEVICE_ID_MAX_LEN)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]  # hw class, codes
# Model names are shorter: they ride in every metrics window (256-byte budget).
ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME_PATTERN)]
Ident = Annotated[str, StringConstraints(pattern=IDENT_PATTERN)]  # cmd/release ids
Text = Annotated[str, StringConstraints(max_length=TEXT_MAX_LEN)]  # human-readable reason / message
Url = Annotated[str, StringConstraints(pattern=URL_PATTERN, max_length=URL_MAX_LEN)]
Sha256Hex = Annotated[str, StringConstraints(pattern=SHA256_PATTERN)]
U8 = Annotated[int, Field(ge=0, le=U8_MAX)]
U16 = Annotated[int, Field(ge=0, le=U16_MAX)]
U32 = Annotated[int, Field(ge=0, le=U32_MAX)]
UnixSeconds = Annotated[int, Field(ge=0, le=U32_MAX)]  # good until 2106
Fraction = Annotated[float, Field(ge=0.0, le=1.0), AfterValidator(quantise_fraction)]  # sent as x*10_000
Percent = Annotated[float, Field(ge=0.0, le=100.0), AfterValidator(quantise_percent)]  # sent as x*10


def _exact_int(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("schema version 'v' must be an integer")
    return value


# Literal[1] alone lets `true` and `1.0` through even in strict mode (True == 1 == 1.0); the JSON fast
# path of telemetry.codec would then accept what the CBOR path (and the device codec) reject.
SchemaVersionField = Annotated[Literal[1], BeforeValidator(_exact_int)]
# 0 = primary model, higher = further down the chain
FallbackLevel = Annotated[int, Field(ge=0, le=MAX_FALLBACK_LEVEL)]

# "rule" is the non-ML last resort of a fallback chain (no model loaded).
Variant = Literal["float32", "float16", "dynamic_int8", "full_int8", "rule"]
VARIANTS: Final[tuple[str, ...]] = get_args(Variant)

OtaState = Literal[
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
    "deferred",  # 1.1: download postponed by the energy policy (waits for battery / charging)
]
OTA_STATES: Final[tuple[str, ...]] = get_args(OtaState)

FallbackReason = Literal[
    "latency",
    "error",
    "battery",
    "memory",
    "health_check",
    "policy",
    "recovered",
    "manual",
    # 1.1: the agent's own switch reasons (before, they travelled as "policy"/"error" + detail)
    "false_positives",
    "load_failed",
    "invoke_failed",
]
FALLBACK_REASONS: Final[tuple[str, ...]] = get_args(FallbackReason)
FallbackStep = Literal["primary", "previous", "smaller_variant", "rule"]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", allow_inf_nan=False)


class ModelRef(_Strict):
    """Which model a device runs: name, monotonically increasing release version, variant."""

    name: ModelName
    version: U32
    variant: Variant


class _Message(_Strict):
    v: SchemaVersionField = SCHEMA_VERSION
    device_id: DeviceId


# ----------------------------------------------------------------------------- device -> server


class ShadowFigures(_Strict):
    """What a shadow (candidate) model did on the sampled share of this window's inputs."""

    candidate_version: U32
    samples: U32  # inputs the candidate also ran on
    agreements: U32  # of those, how many got the same decision as the primary
    candidate_positives: U32
    candidate_false_positives: U32
    candidate_latency_p50_us: U32
    candidate_latency_p95_us: U32

    @model_validator(mode="after")
    def _consistent(self) -> ShadowFigures:
        if self.agreements > self.samples:
            raise ValueError("agreements exceed samples")
        if self.candidate_positives > self.samples:
            raise ValueError("candidate_positives exceed samples")
        if self.candidate_latency_p50_us > self.candidate_latency_p95_us:
            raise ValueError("candidate latency p50 exceeds p95")
        return self

    @property
    def agreement(self) -> float | None:
        return self.agreements / self.samples if self.samples else None


class MetricsWindow(_Message):
    """One closed aggregation window of a device. ``seq`` is monotonic per device (dedup, gaps)."""

    type: Literal["metrics"] = "metrics"
    seq: U32
    window_start_s: UnixSeconds
    window_len_s: Annotated[int, Field(ge=1, le=U16_MAX)]  # <= 18.2 h; 3 CBOR bytes
    duty_cycle: Fraction  # active (inferring) time / window length
    battery_pct: Percent | None = None  # None: mains powered / no gauge
    battery_mv: U16 | None = None
    charging: bool = False
    est_battery_life_min: U32 | None = None  # None: unknown or charging
    inferences: U32
    positives: U32
    false_positives: U32  # positives that feedback marked wrong during this window
    latency_p50_us: U32
    latency_p95_us: U32
    latency_max_us: U32
    model: ModelRef
    fallback_level: FallbackLevel = 0
    input_feature: U8 = 0  # index of the baseline input feature that input_hist counts
    input_hist: Annotated[list[U32], Field(max_length=MAX_HIST_BINS)] = Field(default_factory=list)
    output_hist: Annotated[list[U32], Field(max_length=MAX_HIST_BINS)] = Field(default_factory=list)
    nonfinite_inputs: U32 = 0  # NaN/inf input summaries, not counted in input_hist
    shadow: ShadowFigures | None = None

    @model_validator(mode="after")
    def _consistent(self) -> MetricsWindow:
        if self.positives > self.inferences:
            raise ValueError("positives exceed inferences")
        if not self.latency_p50_us <= self.latency_p95_us <= self.latency_max_us:
            raise ValueError("latency percentiles must satisfy p50 <= p95 <= max")
        if sum(self.input_hist) + self.nonfinite_inputs > self.inferences:
            raise ValueError("input_hist counts more values than inferences")
        if sum(self.output_hist) > self.inferences:
            raise ValueError("output_hist counts more scores than inferences")
        if self.shadow is not None and self.shadow.samples > self.inferences:
            raise ValueError("shadow samples exceed inferences")
        return self

    @property
    def window_end_s(self) -> int:
        return self.window_start_s + self.window_len_s


class Status(_Message):
    """Heartbeat, published retained on ``.../status``; also the answer to a Ping (``reply_to``)."""

    type: Literal["status"] = "status"
    ts: UnixSeconds
    uptime_s: U32
    hardware_class: Name
    agent_version: Name
    model: ModelRef | None = None
    active_slot: Literal["a", "b"] | None = None
    fallback_level: FallbackLevel = 0
    shadow_enabled: bool = False
    battery_pct: Percent | None = None
    charging: bool = False
    rss_kb: U32 | None = None
    reply_to: Ident | None = None  # cmd_id of the Ping this status answers
    # 1.1 (optional, appended): link state and the agent's intake/buffer counters
    online: bool = True  # False in the retained last-will / graceful-stop status
    buffer_pending: U32 | None = None  # telemetry records waiting in the disk buffer
    buffer_dropped: U32 | None = None  # records the full disk buffer dropped (oldest first), ever
    cmd_rejected: U32 | None = None  # commands refused (malformed, other device, bad version), ever


class FallbackSwitched(_Message):
    type: Literal["fallback_switched"] = "fallback_switched"
    ts: UnixSeconds
    from_level: FallbackLevel
    to_level: FallbackLevel
    reason: FallbackReason
    detail: Text | None = None
    model: ModelRef | None = None  # what runs after the switch

    @model_validator(mode="after")
    def _changed(self) -> FallbackSwitched:
        if self.from_level == self.to_level:
            raise ValueError("from_level equals to_level: not a switch")
        return self


class OtaStateChanged(_Message):
    type: Literal["ota_state_changed"] = "ota_state_changed"
    ts: UnixSeconds
    release_id: Ident
    from_state: OtaState
    to_state: OtaState
    reason: Text | None = None
    cmd_id: Ident | None = None  # 1.1: the command this update runs for


class ErrorEvent(_Message):
    type: Literal["error"] = "error"
    ts: UnixSeconds
    component: Name  # e.g. "runtime", "ota", "sensor", "publisher"
    code: Name  # stable machine-readable code, e.g. "invoke_failed"
    message: Text
    fatal: bool = False


class OtaStatus(_Message):
    """Progress of the update a device is working on; published on ``.../ota``."""

    type: Literal["ota_status"] = "ota_status"
    ts: UnixSeconds
    release_id: Ident
    target_version: U32
    from_version: U32 | None = None
    state: OtaState
    via_delta: bool = False
    bytes_done: U32 = 0
    bytes_total: U32 = 0
    attempt: Annotated[int, Field(ge=1, le=U8_MAX)] = 1
    error: Text | None = None
    cmd_id: Ident | None = None  # 1.1: the command this update runs for

    @model_validator(mode="after")
    def _progress(self) -> OtaStatus:
        if self.bytes_total and self.bytes_done > self.bytes_total:
            raise ValueError("bytes_done exceeds bytes_total")
        return self


# ----------------------------------------------------------------------------- server -> device


class ArtifactRef(_Strict):
    """Where to fetch a file and what it must hash to. Hints only: the signed manifest decides."""

    url: Url
    sha256: Sha256Hex
    size_bytes: Annotated[int, Field(ge=1, le=U32_MAX)]


class DeltaRef(ArtifactRef):
    from_version: U32  # the installed version this patch applies to
    format: Literal["bsdiff4"] = "bsdiff4"


class _Command(_Message):
    cmd_id: Ident  # echoed in acks / Status.reply_to
    ts: UnixSeconds


class UpdateAvailable(_Command):
    type: Literal["cmd.update"] = "cmd.update"
    release_id: Ident
    model_name: ModelName
    target_version: U32
    hardware_class: Name
    manifest: ArtifactRef  # the signed release manifest (its bytes are what the signature covers)
    artifact: ArtifactRef  # the full model file
    delta: DeltaRef | None = None  # smaller download when the device runs delta.from_version
    # 1.1: the release's health-check companions (converter report, golden inputs/outputs), fetched
    # with the artifact so the device can check the trial model; hints like the others.
    report: ArtifactRef | None = None  # report.json
    golden: ArtifactRef | None = None  # golden.npz


class Rollback(_Command):
    type: Literal["cmd.rollback"] = "cmd.rollback"
    release_id: Ident | None = None  # the release being rolled back, for the record
    to_version: U32 | None = None  # None: revert to the other (previous) slot
    reason: Text


class SetShadowMode(_Command):
    type: Literal["cmd.shadow"] = "cmd.shadow"
    enabled: bool
    sample_fraction: Fraction = 0.0  # share of inputs the candidate also runs on
    candidate_version: U32 | None = None

    @model_validator(mode="after")
    def _fraction(self) -> SetShadowMode:
        if self.enabled and self.sample_fraction <= 0.0:
            raise ValueError("shadow mode enabled with sample_fraction 0")
        return self


class SetFallbackPolicy(_Command):
    type: Literal["cmd.fallback_policy"] = "cmd.fallback_policy"
    chain: Annotated[list[FallbackStep], Field(min_length=1, max_length=4)]
    max_latency_us: U32 | None = None  # p95 above this -> step down
    max_consecutive_errors: Annotated[int, Field(ge=1, le=1000)] = 3
    min_battery_pct: Percent | None = None  # below this -> step down to save energy
    recover_after_s: Annotated[int, Field(ge=0, le=86_400)] = 300  # try climbing back after this


class Ping(_Command):
    type: Literal["cmd.ping"] = "cmd.ping"


# ----------------------------------------------------------------------------- unions and routing

DeviceMessage = MetricsWindow | Status | FallbackSwitched | OtaStateChanged | ErrorEvent | OtaStatus
Command = UpdateAvailable | Rollback | SetShadowMode | SetFallbackPolicy | Ping
Message = Annotated[DeviceMessage | Command, Field(discriminator="type")]

MESSAGE_CLASSES: Final[dict[str, type[_Message]]] = {
    cls.model_fields["type"].default: cls
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

CHANNEL_OF_TYPE: Final[dict[str, Channel]] = _WIRE_CHANNEL_OF_TYPE  # type: ignore[assignment]


def channel_of(message: Any) -> Channel:
    """The topic channel a message is published on."""
    return CHANNEL_OF_TYPE[message.type]
