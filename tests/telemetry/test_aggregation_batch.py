"""WindowAggregator.record_batch: a batch counts exactly like the same inferences fed one by one."""

from __future__ import annotations

import random

import pytest

from telemetry import device_codec as dc
from telemetry.aggregation import AggregationError, WindowAggregator, bin_index
from telemetry.errors import SchemaViolation

EDGES_IN = (0.0, 0.5, 1.0, 2.0)
EDGES_OUT = (0.0, 0.25, 0.5, 0.75, 1.0)
MODEL = dc.ModelRef(name="m", version=1, variant="float32")


def _agg() -> WindowAggregator:
    agg = WindowAggregator("dev-1", MODEL, input_edges=EDGES_IN, output_edges=EDGES_OUT,
                           max_latency_samples=50, seed=3)
    agg.open(1000.0)
    return agg


def test_batches_close_to_the_same_window_as_single_records() -> None:
    rng = random.Random(7)
    rows = []
    for _ in range(300):  # > max_latency_samples: the reservoir's random draws must line up too
        nonfinite = rng.random() < 0.05
        rows.append((
            rng.randrange(0, 5000), rng.random() < 0.3, rng.random() * 1e-3,
            float("nan") if nonfinite else rng.choice([*EDGES_IN, rng.uniform(-1, 3)]),
            rng.choice([*EDGES_OUT, rng.random()]),
        ))
    single = _agg()
    for lat, pos, act, x, y in rows:
        single.record_inference(lat, pos, output_score=y, input_value=x, active_s=act)
    batched = _agg()
    for lo in range(0, len(rows), 64):
        part = rows[lo : lo + 64]
        in_counts = [0] * (len(EDGES_IN) - 1)
        out_counts = [0] * (len(EDGES_OUT) - 1)
        for _, _, _, x, y in part:
            if x == x:
                in_counts[bin_index(EDGES_IN, x)] += 1
            out_counts[bin_index(EDGES_OUT, y)] += 1
        batched.record_batch([r[0] for r in part], sum(r[1] for r in part), [r[2] for r in part],
                             input_counts=in_counts, output_counts=out_counts,
                             nonfinite_inputs=sum(r[3] != r[3] for r in part))
    assert batched.close_record(1060.0) == single.close_record(1060.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latencies_us": [1, -1], "positives": 0, "active_s": [0.0, 0.0]}, "latency must be >= 0"),
        ({"latencies_us": [1], "positives": 2, "active_s": [0.0]}, "positives must be in 0..1"),
        ({"latencies_us": [1], "positives": 0, "active_s": []}, "active times"),
        ({"latencies_us": [1], "positives": 0, "active_s": [0.0], "input_counts": [1, 0]}, "counts has 2"),
        ({"latencies_us": [1], "positives": 0, "active_s": [0.0], "input_counts": [1, 1, 0]}, "exceed"),
        ({"latencies_us": [1], "positives": 0, "active_s": [0.0], "output_counts": [0, -1, 0, 0]}, ">= 0"),
    ],
)
def test_bad_batches_are_refused_and_leave_the_window_unchanged(kwargs: dict, match: str) -> None:
    agg = _agg()
    agg.record_inference(10, True, output_score=0.9, input_value=0.7, active_s=1e-5)
    before = agg.close_record(1001.0, reopen=False)
    agg = _agg()
    agg.record_inference(10, True, output_score=0.9, input_value=0.7, active_s=1e-5)
    with pytest.raises(AggregationError, match=match):
        agg.record_batch(**kwargs)
    assert agg.close_record(1001.0, reopen=False) == before


def test_record_from_dict_round_trips_and_checks() -> None:
    ping = dc.Ping(device_id="dev-1", cmd_id="p", ts=3)
    assert dc.record_from_dict(dc.as_dict(ping)) == ping
    with pytest.raises(SchemaViolation, match="ts"):
        dc.record_from_dict({**dc.as_dict(ping), "ts": -1})
