"""WindowAggregator.close_record (pydantic-free device record) against close() (the pydantic window)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetry import codec, schemas
from telemetry import device_codec as dc
from telemetry.aggregation import AggregationError, WindowAggregator, merge_windows
from telemetry.errors import SchemaViolation

T0 = 1_795_000_000.0
PYD_MODEL = schemas.ModelRef(name="kws-yesno", version=7, variant="full_int8")
DEV_MODEL = dc.ModelRef(name="kws-yesno", version=7, variant="full_int8")

# One step of a window: ("inf", latency_us, positive, score, input, active_s) | ("fp", n) | ("shadow", ...)
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("inf"),
            st.integers(0, 5_000_000),
            st.booleans(),
            st.none() | st.floats(-0.5, 1.5) | st.just(math.nan),
            st.none() | st.floats(-10, 10) | st.sampled_from([math.nan, math.inf]),
            st.none() | st.floats(0, 2),
        ),
        st.tuples(st.just("fp"), st.integers(0, 3)),
        st.tuples(st.just("shadow"), st.booleans(), st.booleans(), st.integers(0, 10**6)),
        st.tuples(st.just("cfp"), st.integers(0, 2)),
    ),
    max_size=80,
)


def feed(a: WindowAggregator, ops: list[tuple[Any, ...]]) -> None:
    for op in ops:
        if op[0] == "inf":
            _, lat, pos, score, x, active = op
            a.record_inference(lat, pos, output_score=score, input_value=x, active_s=active)
        elif op[0] == "fp":
            a.record_false_positive(op[1])
        elif op[0] == "shadow":  # the candidate runs on an input the primary model also ran on
            a.record_inference(op[3] // 2, op[1])
            a.record_shadow(*op[1:])
        else:
            a.record_candidate_false_positive(op[1])


def twins(model_a: Any = PYD_MODEL, model_b: Any = DEV_MODEL, **kw: Any) -> tuple[WindowAggregator, ...]:
    out = []
    for model in (model_a, model_b):
        a = WindowAggregator("pi-0001", model, input_edges=[-1.0, 0.0, 1.0, 2.0], seed=3, **kw)
        a.open(T0)
        out.append(a)
    return tuple(out)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps,
    st.floats(0.5, 60_000),
    st.none() | st.floats(0, 100),
    st.none() | st.integers(0, 65_535),
    st.booleans(),
    st.none() | st.integers(0, 2**32 - 1),
)
def test_close_and_close_record_give_the_same_window_and_bytes(
    ops: list[tuple[Any, ...]],
    length: float,
    battery: float | None,
    mv: int | None,
    shadow_on: bool,
    life: int | None,
) -> None:
    a, b = twins(max_latency_samples=16)  # small reservoir: the seeded sampling must match too
    feed(a, ops)
    feed(b, ops)
    figures = dict(battery_pct=battery, battery_mv=mv, est_battery_life_min=life,
                   shadow_candidate_version=8 if shadow_on else None)
    window = a.close(T0 + length, **figures)  # type: ignore[arg-type]
    record = b.close_record(T0 + length, **figures)  # type: ignore[arg-type]
    assert isinstance(window, schemas.MetricsWindow) and isinstance(record, dc.MetricsWindow)
    assert window.model_dump(mode="json") == dc.as_dict(record)
    for name in ("cbor", "json"):
        assert dc.encode(record, name) == codec.encode(window, name)  # type: ignore[arg-type]
    assert a.next_seq == b.next_seq == 1 and a.is_open and b.is_open


def test_close_returns_the_pydantic_window_for_existing_callers() -> None:
    a = WindowAggregator("pi-0001", PYD_MODEL)
    a.open(T0)
    a.record_inference(1500, True, output_score=0.9)
    w = a.close(T0 + 30, battery_pct=50.04)
    assert type(w) is schemas.MetricsWindow and w.model == PYD_MODEL and w.battery_pct == 50.0
    a.set_model(schemas.ModelRef(name="kws-yesno", version=6, variant="float32"), fallback_level=2)
    a.record_inference(10, False)
    w2 = a.close(T0 + 60)
    assert (w2.seq, w2.model.version, w2.model.variant, w2.fallback_level) == (1, 6, "float32", 2)
    assert codec.decode(codec.encode(w2)) == w2


def test_bad_close_figures_leave_the_window_open_and_intact() -> None:
    a = WindowAggregator("pi-0001", DEV_MODEL, first_seq=41)
    a.open(T0)
    for i in range(5):
        a.record_inference(1000 + i, i == 0)
    for bad, field in (({"battery_pct": 100.5}, "battery_pct"), ({"battery_mv": 70_000}, "battery_mv"),
                       ({"battery_pct": math.nan}, "battery_pct"), ({"charging": 1}, "charging")):
        with pytest.raises(SchemaViolation, match=field):
            a.close_record(T0 + 60, **bad)  # type: ignore[arg-type]
        with pytest.raises(SchemaViolation, match=field):
            a.close(T0 + 60, **bad)  # type: ignore[arg-type]
    assert a.is_open and a.next_seq == 41
    record = a.close_record(T0 + 60, battery_pct=99.0)
    assert (record.seq, record.inferences, record.positives, record.latency_max_us) == (41, 5, 1, 1004)


def test_model_references_of_either_kind_and_nothing_else() -> None:
    a = WindowAggregator("pi-0001", PYD_MODEL)
    assert a.model == DEV_MODEL  # kept as the device record
    a.set_model(dc.ModelRef(name="kws-yesno", version=8, variant="rule"), 3)
    a.open(T0)
    assert a.close_record(T0 + 1).model == dc.ModelRef(name="kws-yesno", version=8, variant="rule")
    with pytest.raises(AggregationError, match="not a model reference"):
        WindowAggregator("pi-0001", "kws-yesno@7")  # type: ignore[arg-type]
    with pytest.raises(SchemaViolation, match="variant"):
        a.set_model(_Duck("kws", 1, "int4"), 0)  # type: ignore[arg-type]


class _Duck:
    def __init__(self, name: str, version: int, variant: str) -> None:
        self.name, self.version, self.variant = name, version, variant


def test_merge_windows_takes_device_records_like_pydantic_windows() -> None:
    rng = random.Random(5)
    records, windows = [], []
    for dev in ("a", "b"):
        x, y = WindowAggregator(dev, DEV_MODEL, seed=1), WindowAggregator(dev, PYD_MODEL, seed=1)
        for agg in (x, y):
            agg.open(T0)
        for k in range(3):
            for _ in range(20):
                lat, pos, s = rng.randrange(100, 9000), rng.random() < 0.2, rng.random()
                x.record_inference(lat, pos, output_score=s)
                y.record_inference(lat, pos, output_score=s)
            end = T0 + 3600 * (k + 1)
            records.append(x.close_record(end, battery_pct=90.0 - k, shadow_candidate_version=None))
            windows.append(y.close(end, battery_pct=90.0 - k))
    assert merge_windows(records + records[:1]) == merge_windows(windows + windows[:1])
