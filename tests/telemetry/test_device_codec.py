"""Cross-checks of the pydantic-free device codec against the pydantic contract (telemetry.codec).

* device records built from the values of random valid pydantic messages encode to the same bytes;
* server-encoded commands decode on the device to the same values;
* differential fuzzing: for random, mutated and near-miss payloads ``decode_command`` accepts exactly
  what ``codec.decode(..., expected_channel="cmd")`` accepts and otherwise raises the same error class;
* the device path (device_codec + aggregation, every message kind) never imports pydantic.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import textwrap
from dataclasses import MISSING, fields
from typing import Any, get_args

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from telemetry_strategies import (
    any_message,
    error_events,
    metrics_windows,
    pings,
    policies,
    rollbacks,
    shadow_cmds,
    statuses,
    updates,
)

from telemetry import codec, schemas, wire
from telemetry import device_codec as dc
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
)

PROPERTY = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
FUZZ = settings(
    max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

commands = st.one_of(updates, rollbacks, shadow_cmds, policies, pings)


def to_record(value: Any) -> Any:
    """The device record holding the same values as a pydantic model (same class and field names)."""
    if isinstance(value, BaseModel):
        cls = getattr(dc, type(value).__name__)
        return cls(**{k: to_record(getattr(value, k)) for k in type(value).model_fields if k != "type"})
    if isinstance(value, list):
        return [to_record(x) for x in value]
    return value


Outcome = tuple[str, Any]


def server_outcome(payload: bytes, device_id: str) -> Outcome:
    """What the pydantic reference makes of a payload on this device's cmd topic."""
    try:
        msg = codec.decode(payload, expected_device_id=device_id, expected_channel="cmd")
    except TelemetryDecodeError as exc:
        return ("rejected", type(exc))
    return ("accepted", msg.model_dump())


def device_outcome(payload: bytes, device_id: str) -> Outcome:
    """Same for the device codec; any exception other than the named errors fails the test."""
    try:
        record = dc.decode_command(payload, device_id=device_id)
    except TelemetryDecodeError as exc:
        return ("rejected", type(exc))
    return ("accepted", dc.as_dict(record))


def assert_same_verdict(payload: bytes, device_id: str = "dev-1") -> Outcome:
    expected = server_outcome(payload, device_id)
    assert device_outcome(payload, device_id) == expected, payload[:200]
    return expected


# ----------------------------------------------------------------------------- one definition


def test_enumerations_and_record_fields_match_the_pydantic_schemas() -> None:
    assert get_args(schemas.Variant) == wire.VARIANTS
    assert get_args(schemas.OtaState) == wire.OTA_STATES
    assert get_args(schemas.FallbackReason) == wire.FALLBACK_REASONS
    assert get_args(schemas.FallbackStep) == wire.FALLBACK_STEPS
    assert set(dc.RECORD_CLASSES) == set(schemas.MESSAGE_CLASSES) == set(wire.CHANNEL_OF_TYPE)
    pairs = [(dc.RECORD_CLASSES[t], schemas.MESSAGE_CLASSES[t]) for t in schemas.MESSAGE_CLASSES]
    parts = ("ModelRef", "ShadowFigures", "ArtifactRef", "DeltaRef")
    pairs += [(getattr(dc, n), getattr(schemas, n)) for n in parts]
    for record_cls, model_cls in pairs:
        rec_fields = {f.name: f for f in fields(record_cls)}
        # same names in the same order: the JSON/CBOR maps are built in declaration order
        assert list(rec_fields) == list(model_cls.model_fields), record_cls.__name__
        for name, info in model_cls.model_fields.items():
            f = rec_fields[name]
            if info.is_required():
                assert f.default is MISSING and f.default_factory is MISSING, (record_cls, name)
            elif info.default_factory is not None:
                assert f.default_factory() == info.default_factory(), (record_cls, name)
            else:
                assert f.default == info.default, (record_cls, name)


# ----------------------------------------------------------------------------- device -> server bytes


@PROPERTY
@given(any_message)
def test_records_encode_byte_identically_to_the_pydantic_codec(message: Any) -> None:
    record = to_record(message)
    for name in ("cbor", "json"):
        data = codec.encode(message, name)  # type: ignore[arg-type]
        assert dc.encode(record, name) == data  # type: ignore[arg-type]
        assert dc.decode(data) == record  # and the device reads back its own (and the server's) bytes
    assert dc.as_dict(record) == message.model_dump(mode="json")


@PROPERTY
@given(
    metrics_windows(hist_count_max=wire.U16_MAX, max_output_bins=10),
    st.floats(0.0, 1.0),
    st.none() | st.floats(0.0, 100.0),
)
def test_windows_quantise_like_the_server_and_keep_the_256_byte_budget(
    message: Any, duty: float, battery: float | None
) -> None:
    # Unquantised floats, as the aggregator computes them: both sides must round them the same way.
    record = dc.MetricsWindow(**(vars_of(to_record(message)) | {"duty_cycle": duty, "battery_pct": battery}))
    server = message.model_copy(update={"duty_cycle": duty, "battery_pct": battery})
    server = schemas.MetricsWindow.model_validate(server.model_dump())
    assert (record.duty_cycle, record.battery_pct) == (server.duty_cycle, server.battery_pct)
    assert dc.encode(record) == codec.encode(server)
    assert len(dc.encode(record)) <= wire.BINARY_WINDOW_TARGET_BYTES


def vars_of(record: Any) -> dict[str, Any]:
    return {f.name: getattr(record, f.name) for f in fields(record) if f.init}


def test_realistic_window_bytes_are_the_documented_positional_array() -> None:
    model = dc.ModelRef(name="kws-yesno", version=7, variant="full_int8")
    w = dc.MetricsWindow(
        device_id="pi-zero-0042", seq=12_345, window_start_s=1_795_000_000, window_len_s=300,
        duty_cycle=0.0812, battery_pct=87.5, battery_mv=3987, est_battery_life_min=4321,
        inferences=3000, positives=120, false_positives=7, latency_p50_us=8123, latency_p95_us=12_456,
        latency_max_us=40_123, model=model, input_feature=3, input_hist=[10, 200], output_hist=[1000, 800],
    )
    arr = cbor2.loads(dc.encode(w))
    # docs/telemetry.md, "Binary layout of a metrics window": scaled integers, variant code 3
    assert arr[wire.METRICS_LAYOUT.index("duty_cycle")] == 812
    assert arr[wire.METRICS_LAYOUT.index("battery_pct")] == 875
    assert arr[wire.METRICS_LAYOUT.index("model")] == ["kws-yesno", 7, 3]
    assert len(arr) == wire.METRICS_REQUIRED  # no shadow, no non-finite inputs: trailing slots left off
    assert codec.decode(dc.encode(w), expected_channel="telemetry").model_dump(mode="json") == dc.as_dict(w)


# ----------------------------------------------------------------------------- server -> device commands


@PROPERTY
@given(commands, st.sampled_from(["cbor", "json"]))
def test_server_encoded_commands_decode_on_the_device_to_the_same_values(command: Any, name: str) -> None:
    data = codec.encode(command, name)  # type: ignore[arg-type]
    record = dc.decode_command(data, device_id=command.device_id)
    assert record == to_record(command)
    assert dc.as_dict(record) == command.model_dump()
    assert type(record).__name__ == type(command).__name__
    with pytest.raises(DeviceMismatch):
        dc.decode_command(data, device_id="yy" if command.device_id == "zz" else "zz")


@PROPERTY
@given(st.one_of(metrics_windows(), statuses, error_events), st.sampled_from(["cbor", "json"]))
def test_device_messages_on_the_cmd_topic_are_the_wrong_channel(message: Any, name: str) -> None:
    data = codec.encode(message, name)  # type: ignore[arg-type]
    assert assert_same_verdict(data, message.device_id) == ("rejected", WrongChannel)
    assert assert_same_verdict(data, "someone-else")[0] == "rejected"


# ----------------------------------------------------------------------------- differential fuzzing

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, 2, 255, 256, 1000, 1001, 86_400, 86_401, wire.U32_MAX, wire.U32_MAX + 1, -1])
    | st.floats()
    | st.sampled_from([0.0, -0.0, 1e-5, 0.99996, 1.00004, 99.96, 100.04, 1.0, 100.0])
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "pi-1", "dev-1", "dev-1\n", "a" * 36, "a" * 37, "x" * 65, "rule", "primary", "bsdiff4",
            "float32", "full_int8", "a", "b", "c", "https://x", "http://a b", "https://a\x1f", "https://a\u2028",
            "https://a\x85", "ftp://x", "0" * 64, "0" * 63, "A" * 64, "t" * 256, "t" * 257, "cmd.ping",
        ]
    ),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=25,
)


def _field_names(cls: type[BaseModel]) -> list[str]:
    return list(cls.model_fields)


@st.composite
def near_miss_objects(draw: Any) -> dict[str, Any]:
    """A valid message (mostly a command for dev-1), then some fields replaced by random values —
    including in nested objects — or deleted, or unknown keys added."""
    base = draw(st.one_of(commands, commands, any_message))
    obj = base.model_dump(mode="json")
    if draw(st.booleans()):
        obj["device_id"] = "dev-1"
    for _ in range(draw(st.integers(0, 3))):
        target = obj
        nested = [k for k, v in obj.items() if isinstance(v, dict)]
        if nested and draw(st.booleans()):
            target = obj[draw(st.sampled_from(nested))]
        keys = list(target)
        op = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if op == "add" or not keys:
            target[draw(st.text(max_size=8))] = draw(_values)
        elif op == "delete":
            del target[draw(st.sampled_from(keys))]
        else:
            target[draw(st.sampled_from(keys))] = draw(_values)
    return obj


def _encodings(obj: Any) -> list[bytes]:
    out = []
    with contextlib.suppress(UnicodeEncodeError):  # a lone surrogate has no UTF-8 (CBOR text) form
        out.append(cbor2.dumps(obj))
    with contextlib.suppress(ValueError):  # NaN/Infinity literals are written: json.loads accepts them
        out.append(json.dumps(obj).encode())
    return out


@FUZZ
@given(near_miss_objects())
def test_fuzz_near_miss_messages_same_verdict_as_the_server(obj: dict[str, Any]) -> None:
    for payload in _encodings(obj):
        if len(payload) <= wire.MAX_PAYLOAD_BYTES:
            assert_same_verdict(payload)


@FUZZ
@given(st.binary(max_size=400) | st.builds(cbor2.dumps, _values) | st.builds(lambda o: json.dumps(o).encode(),
                                                                               _values))
def test_fuzz_random_payloads_same_verdict_as_the_server(payload: bytes) -> None:
    assert_same_verdict(payload)


@FUZZ
@given(commands, st.sampled_from(["cbor", "json"]), st.lists(st.integers(0, 2**16), min_size=1, max_size=8),
       st.data())
def test_fuzz_mutated_commands_same_verdict_as_the_server(command: Any, name: str, positions: list[int],
                                                          data: Any) -> None:
    payload = bytearray(codec.encode(command, name))  # type: ignore[arg-type]
    for pos in positions:
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        i = pos % max(1, len(payload))
        if op == "flip" and payload:
            payload[i] ^= data.draw(st.integers(1, 255))
        elif op == "delete" and payload:
            del payload[i]
        else:
            payload.insert(i, data.draw(st.integers(0, 255)))
    assert_same_verdict(bytes(payload), command.device_id)


@FUZZ
@given(commands, st.sampled_from(["cbor", "json"]))
def test_every_truncation_of_a_command_is_rejected_alike(command: Any, name: str) -> None:
    data = codec.encode(command, name)  # type: ignore[arg-type]
    for cut in sorted({0, 1, len(data) // 3, len(data) // 2, len(data) - 1}):
        assert assert_same_verdict(data[:cut], command.device_id)[0] == "rejected"


# ----------------------------------------------------------------------------- corners the engines differ on


def _cmd(**over: Any) -> dict[str, Any]:
    return {"v": 1, "device_id": "dev-1", "cmd_id": "c-1", "ts": 1, "type": "cmd.ping"} | over


def _update(url: str) -> dict[str, Any]:
    ref = {"url": url, "sha256": "0" * 64, "size_bytes": 10}
    return _cmd(type="cmd.update", release_id="r1", model_name="m", target_version=2, hardware_class="pi",
                manifest=ref, artifact=ref)


@pytest.mark.parametrize(
    ("obj", "verdict"),
    [
        (_cmd(), "accepted"),
        (_cmd(device_id="dev-1\n"), SchemaViolation),  # Python's `$` would match before the newline
        (_cmd(cmd_id="c\n"), SchemaViolation),
        (_update("https://a\x1fb"), "accepted"),  # Python's \s matches U+001F, Rust's (pydantic's) does not
        (_update("https://a\u2028b"), SchemaViolation),  # Unicode White_Space for both
        (_update("https://a\ud800"), SchemaViolation),  # lone surrogate (JSON escape): not text to pydantic
        (_cmd(type="cmd.rollback", reason="x\udfff"), SchemaViolation),
        (_update("https://a\x85b"), SchemaViolation),
        (_update("https://" + "a" * 504), "accepted"),  # 512 characters, the maximum
        (_update("https://" + "a" * 505), SchemaViolation),
        (_cmd(type="cmd.shadow", enabled=True, sample_fraction=0.00004), SchemaViolation),  # rounds to 0
        (_cmd(type="cmd.shadow", enabled=True, sample_fraction=0.00005), "accepted"),
        (_cmd(type="cmd.shadow", enabled=True, sample_fraction=1.00004), SchemaViolation),  # bound first
        (_cmd(type="cmd.shadow", enabled=True, sample_fraction=1), "accepted"),  # int accepted for a float
        (_cmd(type="cmd.shadow", enabled=True, sample_fraction=True), SchemaViolation),
        (_cmd(type="cmd.shadow", enabled=1, sample_fraction=0.5), SchemaViolation),
        (_cmd(type="cmd.fallback_policy", chain=[]), SchemaViolation),
        (_cmd(type="cmd.fallback_policy", chain=["rule"], min_battery_pct=10**400), SchemaViolation),
        (_cmd(type="cmd.fallback_policy", chain=["rule"], min_battery_pct=float("nan")), SchemaViolation),
        (_cmd(ts=1.0), SchemaViolation),
        (_cmd(ts="1"), SchemaViolation),
        (_cmd(v=2), UnsupportedVersion),
        (_cmd(v=True), SchemaViolation),  # pydantic's Literal[1] alone took JSON true and 1.0
        (_cmd(v=1.0), SchemaViolation),
        (_cmd(type="cmd.reboot"), UnknownMessageType),
        (_cmd(device_id="dev-2"), DeviceMismatch),
        (_cmd(device_id="dev/+"), SchemaViolation),  # invalid id: a violation, not a mismatch
        ({k: v for k, v in _cmd().items() if k != "v"}, SchemaViolation),
        ({k: v for k, v in _cmd().items() if k != "cmd_id"}, SchemaViolation),
        (_cmd(extra={"anything": [1, 2]}), "accepted"),  # unknown keys: a newer minor version
    ],
)
def test_corner_cases_same_verdict_as_the_server(obj: dict[str, Any], verdict: Any) -> None:
    for payload in _encodings(obj):
        outcome = assert_same_verdict(payload)
        assert (outcome[0] if verdict == "accepted" else outcome[1]) == verdict


def test_framing_corners_same_verdict_as_the_server() -> None:
    ping = json.dumps(_cmd())
    cases = {
        b"": MalformedPayload,
        b"\x00": MalformedPayload,
        b" " * (wire.MAX_PAYLOAD_BYTES + 1): PayloadTooLarge,
        ping.encode("utf-16-le"): "accepted",  # json.loads detects UTF-16; so does the reference's fallback
        ping.replace('"ts": 1', '"ts": "x", "ts": 1').encode(): "accepted",  # duplicate key: last wins
        ping.replace('"ts": 1', '"ts": 1, "ts": "x"').encode(): SchemaViolation,
        b'{"v":1,"type":"cmd.ping","device_id":"dev-1","cmd_id":"c","ts":1e400}': SchemaViolation,
        b'{"v":1,"x":' + b"[" * 2000 + b"]" * 2000 + b"}": MalformedPayload,  # nesting: RecursionError
        cbor2.dumps([1, 1, "dev-1"]): SchemaViolation,  # a positional window, too short
        cbor2.dumps([2, 1]): UnsupportedVersion,
        cbor2.dumps([1, 7]): UnknownMessageType,
        cbor2.dumps(_cmd() | {"ts": cbor2.CBORTag(1, 5)}): SchemaViolation,  # a tag
        b"\xa2\x61v\x01\x61v\x01": MalformedPayload,  # duplicate CBOR key
        cbor2.dumps(_cmd()) + b"\x00": MalformedPayload,  # trailing bytes after a valid item
        b"\x9f\x01\xff": MalformedPayload,  # indefinite length
    }
    for payload, verdict in cases.items():
        outcome = assert_same_verdict(payload)
        assert (outcome[0] if verdict == "accepted" else outcome[1]) == verdict, payload[:40]


# ----------------------------------------------------------------------------- records as an API


def test_constructing_an_invalid_record_names_the_field() -> None:
    model = dc.ModelRef(name="m", version=1, variant="rule")
    good = dict(device_id="d", seq=1, window_start_s=1, window_len_s=60, duty_cycle=0.5, inferences=10,
                positives=1, false_positives=0, latency_p50_us=1, latency_p95_us=2, latency_max_us=3,
                model=model)
    dc.MetricsWindow(**good)
    bad = [
        ({"seq": -1}, "seq"),
        ({"seq": True}, "seq"),
        ({"duty_cycle": math.inf}, "duty_cycle"),
        ({"battery_pct": 100.5}, "battery_pct"),
        ({"device_id": "a/b"}, "device_id"),
        ({"input_hist": [1] * 17}, "input_hist"),
        ({"input_hist": (1, 2)}, "input_hist"),
        ({"output_hist": [1, -1]}, "output_hist.1"),
        ({"model": {"name": "m", "version": 1, "variant": "int4"}}, "model.variant"),
        ({"positives": 11}, "positives exceed"),
        ({"latency_p95_us": 4}, "p50 <= p95 <= max"),
    ]
    for over, needle in bad:
        with pytest.raises(SchemaViolation, match=needle.replace(".", r"\.").replace("(", r"\(")):
            dc.MetricsWindow(**(good | over))
    with pytest.raises(TypeError):
        dc.MetricsWindow(**(good | {"type": "status"}))  # the discriminator is not a constructor argument
    w = dc.MetricsWindow(**(good | {"duty_cycle": 0.123456, "battery_pct": 55.55}))
    assert (w.duty_cycle, w.battery_pct) == (0.1235, 55.5)  # quantised on construction, like pydantic
    with pytest.raises(AttributeError):
        w.seq = 2  # type: ignore[misc]  # frozen, like the pydantic models


def test_encode_refuses_non_records_and_unknown_codecs() -> None:
    ping = dc.Ping(device_id="d", cmd_id="c", ts=1)
    with pytest.raises(TelemetryEncodeError):
        dc.encode({"v": 1, "type": "cmd.ping"})
    with pytest.raises(TelemetryEncodeError):
        dc.encode(dc.ModelRef(name="m", version=1, variant="rule"))  # a part, not a message
    with pytest.raises(TelemetryEncodeError):
        dc.encode(ping, "xml")  # type: ignore[arg-type]
    with pytest.raises(SchemaViolation, match="surrogate"):  # would have no UTF-8 form on the wire
        dc.ErrorEvent(device_id="d", ts=1, component="c", code="c", message="\ud800")
    long = dc.ErrorEvent(device_id="d", ts=1, component="c", code="c", message="\x01" * 256)
    assert dc.encode(long, "json") == codec.encode(schemas.ErrorEvent(**vars_of(long)), "json")
    with pytest.raises(MalformedPayload):
        dc.decode(b"{}", "xml")  # type: ignore[arg-type]
    with pytest.raises(MalformedPayload):
        dc.decode_command("not bytes", device_id="d")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- no pydantic on the device

_DEVICE_PATH = textwrap.dedent(
    """
    import sys
    from telemetry import device_codec as dc
    from telemetry.aggregation import WindowAggregator
    m = dc.ModelRef(name="kws", version=3, variant="full_int8")
    agg = WindowAggregator("pi-1", m, input_edges=[0.0, 0.5, 1.0], first_seq=7)
    agg.open(1000.0)
    for i in range(50):
        agg.record_inference(800 + i, i % 7 == 0, output_score=i / 50, input_value=i / 40)
        agg.record_shadow(True, False, 900)
    records = [agg.close_record(1300.0, battery_pct=80.0, shadow_candidate_version=4)]
    ref = dc.ArtifactRef(url="https://h/m", sha256="0" * 64, size_bytes=9)
    records += [
        dc.Status(device_id="pi-1", ts=1, uptime_s=2, hardware_class="pi", agent_version="0.1", model=m),
        dc.FallbackSwitched(device_id="pi-1", ts=1, from_level=0, to_level=1, reason="latency", model=m),
        dc.OtaStateChanged(device_id="pi-1", ts=1, release_id="r", from_state="idle", to_state="downloading"),
        dc.ErrorEvent(device_id="pi-1", ts=1, component="runtime", code="invoke_failed", message="x"),
        dc.OtaStatus(device_id="pi-1", ts=1, release_id="r", target_version=4, state="trial"),
        dc.UpdateAvailable(device_id="pi-1", cmd_id="c1", ts=1, release_id="r", model_name="kws",
                           target_version=4, hardware_class="pi", manifest=ref, artifact=ref,
                           delta=dc.DeltaRef(url="https://h/d", sha256="1" * 64, size_bytes=3,
                                             from_version=3)),
        dc.Rollback(device_id="pi-1", cmd_id="c2", ts=1, reason="bad"),
        dc.SetShadowMode(device_id="pi-1", cmd_id="c3", ts=1, enabled=True, sample_fraction=0.1),
        dc.SetFallbackPolicy(device_id="pi-1", cmd_id="c4", ts=1, chain=["primary", "rule"]),
        dc.Ping(device_id="pi-1", cmd_id="c5", ts=1),
    ]
    kinds = set()
    for r in records:
        for codec in ("cbor", "json"):
            data = dc.encode(r, codec)
            assert dc.decode(data) == r
            if r.type.startswith("cmd."):
                assert dc.decode_command(data, device_id="pi-1") == r
        kinds.add(r.type)
    assert len(kinds) == 11, kinds
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core"))
    print(",".join(heavy + [m for m in sys.modules if m == "telemetry.schemas"]))
    """
)


def test_device_path_never_imports_pydantic() -> None:
    proc = subprocess.run([sys.executable, "-c", _DEVICE_PATH], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"the device path imported: {proc.stdout.strip()}"


def test_string_rules_agree_with_pydantics_regex_engine_character_by_character() -> None:
    # Python's re and pydantic's Rust regex differ on \s and `$`; the shared patterns must not.
    def verdicts(build: Any, text: str) -> tuple[bool, bool]:
        try:
            build(schemas, text)
            server = True
        except ValueError:  # pydantic's ValidationError is a ValueError
            server = False
        try:
            build(dc, text)
            device = True
        except SchemaViolation:
            device = False
        return server, device

    def url(mod: Any, text: str) -> Any:
        return mod.ArtifactRef(url=f"https://h{text}x", sha256="0" * 64, size_bytes=1)

    def names(mod: Any, text: str) -> Any:
        return mod.ErrorEvent(device_id=f"d{text}", ts=1, component=f"c{text}", code="c", message="m")

    disagreements = [
        (build.__name__, hex(cp))
        for cp in range(0x3100)  # every White_Space / str.isspace() character is below U+3001
        for build in (url, names)
        if len(set(verdicts(build, chr(cp)))) > 1
    ]
    assert disagreements == []
