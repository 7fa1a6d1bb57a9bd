"""Codec round trips, the 256-byte window budget, and that bad payloads only ever raise named errors."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telemetry_strategies import any_message, metrics_windows

from telemetry.codec import (
    BINARY_WINDOW_TARGET_BYTES,
    MAX_PAYLOAD_BYTES,
    METRICS_LAYOUT,
    decode,
    decode_cbor,
    decode_from_topic,
    decode_json,
    encode,
    encode_cbor,
    encode_json,
)
from telemetry.errors import (
    DeviceMismatch,
    PayloadTooLarge,
    SchemaViolation,
    TelemetryDecodeError,
    TelemetryEncodeError,
    UnknownMessageType,
    UnsupportedVersion,
    WrongChannel,
)
from telemetry.schemas import (
    MESSAGE_CLASSES,
    U16_MAX,
    U32_MAX,
    ArtifactRef,
    DeltaRef,
    ErrorEvent,
    MetricsWindow,
    ModelRef,
    Ping,
    ShadowFigures,
    UpdateAvailable,
)
from telemetry.topics import cmd_topic, telemetry_topic

PROPERTY = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def window(**over: Any) -> MetricsWindow:
    """A realistic 5-minute window of a keyword-spotting Pi Zero, with both histograms and shadow figures."""
    fields: dict[str, Any] = dict(
        device_id="pi-zero-0042",
        seq=12_345,
        window_start_s=1_795_000_000,
        window_len_s=300,
        duty_cycle=0.0812,
        battery_pct=87.5,
        battery_mv=3987,
        charging=False,
        est_battery_life_min=4321,
        inferences=3000,
        positives=120,
        false_positives=7,
        latency_p50_us=8123,
        latency_p95_us=12_456,
        latency_max_us=40_123,
        model=ModelRef(name="kws-yesno", version=7, variant="full_int8"),
        fallback_level=0,
        input_feature=3,
        input_hist=[10, 200, 300, 400, 500, 600, 500, 300, 150, 40],
        output_hist=[1000, 800, 400, 200, 150, 120, 100, 90, 80, 60],
        shadow=ShadowFigures(
            candidate_version=8,
            samples=300,
            agreements=291,
            candidate_positives=13,
            candidate_false_positives=1,
            candidate_latency_p50_us=8200,
            candidate_latency_p95_us=13_000,
        ),
    )
    fields.update(over)
    return MetricsWindow(**fields)


def assert_named_error_or_message(payload: bytes, codec: str = "auto") -> None:
    try:
        msg = decode(payload, codec)  # type: ignore[arg-type]
    except TelemetryDecodeError:
        return
    assert msg.type in MESSAGE_CLASSES  # decoding succeeded: it must be a real, validated message


# ----------------------------------------------------------------------------- round trips


@PROPERTY
@given(any_message)
def test_decode_encode_round_trip_both_codecs(message: Any) -> None:
    for codec in ("json", "cbor"):
        data = encode(message, codec)
        assert len(data) <= MAX_PAYLOAD_BYTES
        assert decode(data, codec) == message
        assert decode(data) == message  # codec sniffing picks the right one


@PROPERTY
@given(metrics_windows(hist_count_max=U16_MAX, max_output_bins=10))
def test_any_window_with_16_bit_bins_fits_256_bytes(message: MetricsWindow) -> None:
    assert len(encode_cbor(message)) <= BINARY_WINDOW_TARGET_BYTES


def test_worst_case_window_fits_256_bytes() -> None:
    # Longest id and model name, every scalar at its maximum, 16 + 10 bins of 16-bit counts, shadow on.
    n = U32_MAX
    worst = window(
        device_id="d" * 36,
        seq=n,
        window_start_s=n,
        window_len_s=U16_MAX,
        duty_cycle=0.1234,
        battery_pct=99.9,
        battery_mv=U16_MAX,
        est_battery_life_min=n,
        inferences=n,
        positives=n,
        false_positives=n,
        latency_p50_us=n,
        latency_p95_us=n,
        latency_max_us=n,
        model=ModelRef(name="m" * 24, version=n, variant="dynamic_int8"),
        fallback_level=15,
        input_feature=255,
        input_hist=[U16_MAX] * 16,
        output_hist=[U16_MAX] * 10,
        nonfinite_inputs=U16_MAX,
        shadow=ShadowFigures(
            candidate_version=n,
            samples=n,
            agreements=n,
            candidate_positives=n,
            candidate_false_positives=n,
            candidate_latency_p50_us=n,
            candidate_latency_p95_us=n,
        ),
    )
    size = len(encode_cbor(worst))
    assert size <= BINARY_WINDOW_TARGET_BYTES, size
    assert decode(encode_cbor(worst)) == worst


def test_binary_window_is_positional_with_scaled_integers() -> None:
    w = window()
    arr = cbor2.loads(encode_cbor(w))
    assert arr[:3] == [1, 1, "pi-zero-0042"]
    layout = dict(zip(METRICS_LAYOUT, arr, strict=False))
    assert layout["duty_cycle"] == 812  # 0.0812 * 10_000
    assert layout["battery_pct"] == 875  # 87.5 * 10
    assert layout["model"] == ["kws-yesno", 7, 3]  # full_int8 is variant code 3
    assert all(isinstance(x, int) for x in layout["input_hist"] + layout["output_hist"])
    # Without shadow figures and nonfinite inputs the optional trailing elements are left off.
    bare = cbor2.loads(encode_cbor(window(shadow=None)))
    assert len(bare) == METRICS_LAYOUT.index("nonfinite_inputs")


def test_binary_is_much_smaller_than_json() -> None:
    w = window()
    cbor_size, json_size = len(encode_cbor(w)), len(encode_json(w))
    assert cbor_size <= BINARY_WINDOW_TARGET_BYTES
    assert cbor_size * 3 < json_size


def test_quantisation_makes_round_trip_exact() -> None:
    w = window(duty_cycle=0.123456789, battery_pct=55.55)
    assert w.duty_cycle == 0.1235
    assert w.battery_pct == 55.5  # 55.55 is stored as 55.5499999... so it rounds down
    assert decode(encode_cbor(w)) == w and decode(encode_json(w)) == w


def test_trailing_elements_from_a_newer_minor_version_are_ignored() -> None:
    w = window()
    arr = [*cbor2.loads(encode_cbor(w)), "field added in v1.1", 42]
    assert decode(cbor2.dumps(arr)) == w
    obj = json.loads(encode_json(w)) | {"added_in_v1_1": [1, 2]}
    assert decode(json.dumps(obj).encode()) == w


# ----------------------------------------------------------------------------- named errors


@pytest.mark.parametrize("codec", ["json", "cbor"])
def test_unknown_major_version_is_its_own_error(codec: str) -> None:
    obj = json.loads(encode_json(Ping(device_id="dev-1", cmd_id="c1", ts=1)))
    for version in (0, 2, 99):
        alien = {"v": version, "type": "something-new", "payload": {"whatever": [1, 2, 3]}}
        data = json.dumps(alien).encode() if codec == "json" else cbor2.dumps(alien)
        with pytest.raises(UnsupportedVersion) as info:
            decode(data)
        assert info.value.version == version
        data = (
            json.dumps(obj | {"v": version}).encode()
            if codec == "json"
            else cbor2.dumps(obj | {"v": version})
        )
        with pytest.raises(UnsupportedVersion):
            decode(data)
    arr = cbor2.loads(encode_cbor(window()))
    arr[0] = 2
    with pytest.raises(UnsupportedVersion):
        decode(cbor2.dumps(arr))


@pytest.mark.parametrize(
    ("mutate", "error", "needle"),
    [
        (lambda o: o | {"seq": True}, SchemaViolation, "seq"),  # bool is not an int here
        (lambda o: o | {"seq": "12"}, SchemaViolation, "seq"),  # no str -> int coercion
        (lambda o: o | {"seq": -1}, SchemaViolation, "seq"),
        (lambda o: o | {"seq": U32_MAX + 1}, SchemaViolation, "seq"),
        (lambda o: o | {"duty_cycle": 1.5}, SchemaViolation, "duty_cycle"),
        (lambda o: o | {"battery_pct": 100.1}, SchemaViolation, "battery_pct"),
        (lambda o: o | {"positives": o["inferences"] + 1}, SchemaViolation, "positives exceed"),
        (lambda o: o | {"latency_p50_us": o["latency_p95_us"] + 1}, SchemaViolation, "p50"),
        (lambda o: o | {"input_hist": [1] * 17}, SchemaViolation, "input_hist"),
        (lambda o: o | {"input_hist": [1, -2]}, SchemaViolation, "input_hist"),
        (lambda o: o | {"device_id": "evil/+/#"}, SchemaViolation, "device_id"),
        (lambda o: o | {"device_id": "x" * 37}, SchemaViolation, "device_id"),
        (lambda o: o | {"device_id": "pi-0042\n"}, SchemaViolation, "device_id"),  # `$` must not allow "\n"
        (lambda o: {k: v for k, v in o.items() if k != "model"}, SchemaViolation, "model"),
        (lambda o: o | {"type": "metricz"}, UnknownMessageType, "metricz"),
        (lambda o: {k: v for k, v in o.items() if k != "v"}, SchemaViolation, "'v'"),
        (lambda o: o | {"v": "1"}, SchemaViolation, "'v'"),
    ],
)
@pytest.mark.parametrize("codec", ["json", "cbor"])
def test_wrong_fields_raise_named_errors_naming_the_field(
    mutate: Any, error: type, needle: str, codec: str
) -> None:
    obj = mutate(json.loads(encode_json(window())))
    data = json.dumps(obj).encode() if codec == "json" else cbor2.dumps(obj)  # CBOR map form
    with pytest.raises(error) as info:
        decode(data, codec)  # type: ignore[arg-type]
    text = str(info.value) + json.dumps(getattr(info.value, "errors", []), default=str)
    assert needle in text


def test_positional_window_with_wrong_shapes() -> None:
    arr = cbor2.loads(encode_cbor(window()))
    bad_model = list(arr)
    bad_model[METRICS_LAYOUT.index("model")] = ["kws", 7, 99]
    bad_scaled = list(arr)
    bad_scaled[METRICS_LAYOUT.index("duty_cycle")] = 10**400  # bignum: must not overflow a float
    bad_float = list(arr)
    bad_float[METRICS_LAYOUT.index("duty_cycle")] = 0.5  # must be the scaled integer
    for bad in (arr[:10], bad_model, bad_scaled, bad_float, [1, 1.0, *arr[2:]], [1, 7, *arr[2:]], [1]):
        with pytest.raises((SchemaViolation, UnknownMessageType)):
            decode(cbor2.dumps(bad), "cbor")


@pytest.mark.parametrize("codec", ["json", "cbor"])
def test_every_truncation_of_a_valid_message_is_rejected(codec: str) -> None:
    messages = [
        window(),
        window(shadow=None, input_hist=[], output_hist=[]),
        Ping(device_id="d", cmd_id="c", ts=5),
    ]
    for message in messages:
        data = encode(message, codec)  # type: ignore[arg-type]
        for cut in range(len(data)):
            with pytest.raises(TelemetryDecodeError):
                decode(data[:cut], codec)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", ["json", "cbor"])
def test_payload_size_limit_is_exact(codec: str) -> None:
    # JSON may carry trailing whitespace, which lets us build a valid payload of exactly the limit.
    data = encode_json(window())
    padded = data + b" " * (MAX_PAYLOAD_BYTES - len(data))
    assert decode(padded, "json") == window()
    with pytest.raises(PayloadTooLarge) as info:
        decode(padded + b" ", "json")
    assert info.value.size == MAX_PAYLOAD_BYTES + 1
    with pytest.raises(PayloadTooLarge):
        decode(b"\xa1" * (MAX_PAYLOAD_BYTES + 1), codec)  # type: ignore[arg-type]


def test_largest_valid_messages_fit_the_limit_and_encoder_refuses_non_messages() -> None:
    url = "https://example.org/" + "a" * 492  # 512 characters, the Url maximum
    ref = ArtifactRef(url=url, sha256="0" * 64, size_bytes=U32_MAX)
    update = UpdateAvailable(
        device_id="d" * 36,
        cmd_id="c" * 64,
        ts=U32_MAX,
        release_id="r" * 64,
        model_name="m" * 24,
        target_version=U32_MAX,
        hardware_class="h" * 32,
        manifest=ref,
        artifact=ref,
        delta=DeltaRef(url=url, sha256="0" * 64, size_bytes=U32_MAX, from_version=U32_MAX),
    )
    escaped = ErrorEvent(device_id="d" * 36, ts=1, component="c", code="c", message="\x01" * 256)
    for message in (update, escaped):
        for codec in ("json", "cbor"):
            data = encode(message, codec)  # type: ignore[arg-type]
            assert len(data) < MAX_PAYLOAD_BYTES
            assert decode(data) == message
    with pytest.raises(TelemetryEncodeError):
        encode({"v": 1, "type": "metrics"})
    with pytest.raises(TelemetryEncodeError):
        encode(window(), "xml")  # type: ignore[arg-type]


def test_hostile_cbor_items_are_named_errors() -> None:
    obj = json.loads(encode_json(window()))
    hostile = [
        cbor2.dumps(obj | {"seq": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}),  # tag 0/1
        cbor2.dumps(obj | {"duty_cycle": decimal.Decimal("0.5")}),  # tag 4
        cbor2.dumps(obj | {"seq": cbor2.CBORTag(9999, [1, 2])}),  # unknown tag
        cbor2.dumps(obj | {"seq": cbor2.undefined}),
        cbor2.dumps(obj | {"seq": cbor2.CBORSimpleValue(99)}),
        cbor2.dumps({b"v": 1, "type": "metrics"}),  # byte-string key
        cbor2.dumps({1: 1}),
        b"\x81" * 500 + b"\x00",  # nested arrays far beyond any message
        b"\xa1\x61v\x01\x61v\x01",  # duplicate key
        b"\x9f\x01\xff",  # indefinite-length array
        b"\xc2\x5a\xff\xff\xff\xff",  # bignum claiming 4 GiB of digits
        b"\x7b\xff\xff\xff\xff\xff\xff\xff\xff",  # text string claiming 2**64 bytes
        # 9000-digit integers: their repr() raises ValueError, so error messages must not use it
        cbor2.dumps({"v": 10**9000, "type": "metrics"}),
        cbor2.dumps({"v": 1, "type": 10**9000}),
        cbor2.dumps([10**9000, 1]),
        cbor2.dumps([1, 10**9000]),
        cbor2.dumps({"v": 1, "type": "cmd.ping", "device_id": "a", "cmd_id": "c", "ts": 10**9000}),
    ]
    for data in hostile:
        with pytest.raises(TelemetryDecodeError):
            decode_cbor(data)


def test_hostile_json_is_named_errors() -> None:
    good = encode_json(window()).decode()
    hostile = [
        b"\xff\xfe{}",
        good.replace('"duty_cycle":0.0812', '"duty_cycle":NaN').encode(),
        good.replace('"duty_cycle":0.0812', '"duty_cycle":Infinity').encode(),
        good.replace('"seq":12345', '"seq":' + "9" * 4000).encode(),
        b'{"v":' + b"9" * 4090 + b"}",
        b'{"v":1,"type":"cmd.ping","device_id":"a","cmd_id":"c","ts":' + b"9" * 4000 + b"}",
        b"[" * 3000 + b"]" * 3000,
        b'{"v":1,"type":"metrics"' + b',"x":{"y":' * 600 + b"1" + b"}" * 601,
        b"[]",
        b"{}",
        b"null",
        b'"text"',
    ]
    for data in hostile:
        with pytest.raises(TelemetryDecodeError):
            decode_json(data)


# ----------------------------------------------------------------------------- device and channel checks


def test_message_for_another_device_is_detected() -> None:
    ping = Ping(device_id="dev-b", cmd_id="c-1", ts=1_795_000_000)
    for codec in ("json", "cbor"):
        data = encode(ping, codec)
        assert decode(data, expected_device_id="dev-b") == ping
        with pytest.raises(DeviceMismatch) as info:
            decode(data, expected_device_id="dev-a")
        assert (info.value.expected, info.value.actual) == ("dev-a", "dev-b")


def test_decode_from_topic_checks_device_and_channel() -> None:
    w = window()
    assert decode_from_topic(telemetry_topic("pi-zero-0042"), encode_cbor(w)) == w
    with pytest.raises(DeviceMismatch):  # a device publishing a window in another device's name
        decode_from_topic(telemetry_topic("pi-zero-0043"), encode_cbor(w))
    with pytest.raises(WrongChannel):  # a window sent on the command channel
        decode_from_topic(cmd_topic("pi-zero-0042"), encode_cbor(w))
    with pytest.raises(SchemaViolation):
        decode_from_topic("tinyfleet/v1/+/telemetry", encode_cbor(w))


# ----------------------------------------------------------------------------- fuzzing


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    for codec in ("auto", "json", "cbor"):
        assert_named_error_or_message(data, codec)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([2**64, -(2**64) - 1, 10**3000])  # bignums (CBOR tags 2/3, long JSON numbers)
    | st.builds(pow, st.just(10), st.integers(4301, 5000))  # beyond repr()'s 4300-digit cap
    | st.floats()
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def near_miss_objects(draw: Any) -> dict[str, Any]:
    """Objects that pass the version/type gate and then have random values in real field names."""
    type_ = draw(st.sampled_from(sorted(MESSAGE_CLASSES)))
    fields = list(MESSAGE_CLASSES[type_].model_fields)
    obj = {"v": 1, "type": type_}
    for name in draw(st.lists(st.sampled_from(fields), max_size=len(fields), unique=True)):
        if name not in ("v", "type"):
            obj[name] = draw(_json_values)
    return obj


@FUZZ
@given(near_miss_objects() | _json_values)
def test_fuzz_structured_values(obj: Any) -> None:
    assert_named_error_or_message(cbor2.dumps(obj), "cbor")
    try:
        text = json.dumps(obj).encode()
    except ValueError:
        return
    assert_named_error_or_message(text, "json")


@FUZZ
@given(
    st.lists(st.integers(0, U16_MAX), min_size=2, max_size=30),
    st.sampled_from(["cbor", "json"]),
    st.data(),
)
def test_fuzz_mutated_valid_payloads(positions: list[int], codec: str, data: Any) -> None:
    payload = bytearray(encode(window(), codec))  # type: ignore[arg-type]
    for pos in positions[:8]:
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        i = pos % max(1, len(payload))
        if op == "flip" and payload:
            payload[i] ^= data.draw(st.integers(1, 255))
        elif op == "delete" and payload:
            del payload[i]
        else:
            payload.insert(i, data.draw(st.integers(0, 255)))
    assert_named_error_or_message(bytes(payload), codec)
    # Positional form: replace one element with a random value.
    arr = cbor2.loads(encode_cbor(window()))
    arr[positions[0] % len(arr)] = data.draw(_json_values)
    assert_named_error_or_message(cbor2.dumps(arr), "cbor")
