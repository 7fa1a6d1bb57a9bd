"""Window aggregation on the agent side, cohort merging and sequence tracking on the server side."""

from __future__ import annotations

import math
import random

import pytest

from telemetry.aggregation import (
    DEFAULT_SCORE_EDGES,
    AggregationError,
    SequenceTracker,
    WindowAggregator,
    bin_index,
    merge_windows,
    nearest_rank,
    validate_edges,
)
from telemetry.codec import decode, encode_cbor
from telemetry.drift import drift_report
from telemetry.schemas import MetricsWindow, ModelRef

MODEL = ModelRef(name="kws-yesno", version=7, variant="full_int8")
T0 = 1_795_000_000.0


def agg(**kw: object) -> WindowAggregator:
    a = WindowAggregator("pi-0001", MODEL, input_edges=[0.0, 1.0, 2.0, 3.0], **kw)  # type: ignore[arg-type]
    a.open(T0)
    return a


def test_histogram_edge_rules() -> None:
    edges = validate_edges([0.0, 1.0, 2.0, 3.0], "t")
    # [0,1) [1,2) [2,3]; below 0 -> first bin, above 3 -> last bin
    cases = {-5.0: 0, 0.0: 0, 0.999: 0, 1.0: 1, 2.5: 2, 3.0: 2, 99.0: 2}
    assert {v: bin_index(edges, v) for v in cases} == cases
    a = agg()
    for v in [*cases, math.nan, math.inf, -math.inf]:
        a.record_inference(1000, False, input_value=v, output_score=0.5)
    w = a.close(T0 + 60)
    assert w.input_hist == [3, 1, 3]
    assert w.nonfinite_inputs == 3
    assert w.output_hist == [0, 0, 0, 0, 0, 10, 0, 0, 0, 0]  # 0.5 is the lower edge of bin [0.5, 0.6)


def test_output_scores_on_the_default_edges() -> None:
    a = WindowAggregator("pi-0001", MODEL)
    a.open(T0)
    for s in (0.0, 0.05, 0.1, 0.95, 1.0, 1.2, -0.1, math.nan):
        a.record_inference(10, s > 0.5, output_score=s)
    w = a.close(T0 + 10)
    # 0.0, 0.05, -0.1 -> bin 0; 0.1 -> bin 1; 0.95, 1.0, 1.2 -> bin 9; NaN not binned
    assert w.output_hist == [3, 1, 0, 0, 0, 0, 0, 0, 0, 3]
    assert w.input_hist == [] and w.inferences == 8 and w.positives == 3
    assert len(DEFAULT_SCORE_EDGES) == 11


def test_latency_percentiles_are_nearest_rank_and_duty_cycle() -> None:
    a = agg()
    lat = list(range(1000, 21000, 1000))  # 1..20 ms
    random.Random(3).shuffle(lat)
    for x in lat:
        a.record_inference(x, False)
    w = a.close(T0 + 100)
    # n = 20: p50 = 10th smallest = 10 ms; p95 = ceil(19)-th = 19th = 19 ms; max 20 ms
    assert (w.latency_p50_us, w.latency_p95_us, w.latency_max_us) == (10_000, 19_000, 20_000)
    # active time defaults to the latencies: sum(1..20) ms = 210 ms over 100 s
    assert w.duty_cycle == pytest.approx(0.0021)
    assert nearest_rank([], 0.5) == 0
    assert nearest_rank([7], 0.95) == 7


def test_explicit_active_time_sequence_and_reopen() -> None:
    a = agg(first_seq=41)
    a.record_inference(500, True, active_s=2.0)
    a.record_inference(500, False, active_s=3.0)
    a.record_false_positive()
    w1 = a.close(T0 + 100, battery_pct=80.0, battery_mv=3900, est_battery_life_min=600)
    assert (w1.seq, w1.window_start_s, w1.window_len_s) == (41, int(T0), 100)
    assert w1.duty_cycle == 0.05 and w1.false_positives == 1 and w1.positives == 1
    assert w1.battery_pct == 80.0 and w1.est_battery_life_min == 600
    a.record_inference(500, False)
    w2 = a.close(T0 + 160)
    assert (w2.seq, w2.window_start_s, w2.window_len_s, w2.inferences) == (42, int(T0) + 100, 60, 1)
    assert a.next_seq == 43 and a.is_open
    assert w2.window_end_s == int(T0) + 160


def test_shadow_figures_and_fallback_level() -> None:
    a = agg()
    for i in range(10):
        a.record_inference(1000, i < 4)
        if i % 2 == 0:
            a.record_shadow(agreed=i != 2, candidate_positive=i < 4, candidate_latency_us=1000 + 100 * i)
    a.record_candidate_false_positive()
    a.set_model(ModelRef(name="kws-yesno", version=6, variant="float32"), fallback_level=1)
    w = a.close(T0 + 60, shadow_candidate_version=8)
    s = w.shadow
    assert s is not None
    # shadowed i = 0,2,4,6,8: agreed except i=2; candidate positive for 0 and 2; latencies 1000..1800
    assert (s.samples, s.agreements, s.candidate_positives, s.candidate_false_positives) == (5, 4, 2, 1)
    assert (s.candidate_latency_p50_us, s.candidate_latency_p95_us) == (1400, 1800)
    assert s.agreement == 0.8
    assert w.fallback_level == 1 and w.model.version == 6
    assert agg().close(T0 + 1).shadow is None  # shadow off: no figures


def test_reservoir_bounds_memory_but_keeps_exact_max() -> None:
    a = agg(max_latency_samples=200, seed=1)
    values = list(range(1, 20_001))
    random.Random(5).shuffle(values)
    for v in values:
        a.record_inference(v, False)
    assert len(a._latencies) == 200
    w = a.close(T0 + 600)
    assert w.latency_max_us == 20_000 and w.inferences == 20_000
    assert 8_000 < w.latency_p50_us < 12_000  # a 200-sample estimate of the true 10_000 (seeded)
    assert 17_500 < w.latency_p95_us <= 20_000


def test_window_survives_the_wire() -> None:
    a = agg()
    rng = random.Random(11)
    for _ in range(500):
        a.record_inference(
            rng.randint(5000, 9000),
            rng.random() < 0.1,
            input_value=rng.uniform(-1, 4),
            output_score=rng.random(),
        )
    w = a.close(T0 + 300, battery_pct=71.3, battery_mv=3850, charging=False, est_battery_life_min=900)
    data = encode_cbor(w)
    assert len(data) <= 256
    assert decode(data, expected_device_id="pi-0001") == w


@pytest.mark.parametrize(
    ("edges", "needle"),
    [
        ([1.0], "2..17 bin edges"),
        (list(range(19)), "2..17 bin edges"),
        ([0.0, 0.0, 1.0], "strictly increasing"),
        ([1.0, 0.0], "strictly increasing"),
        ([0.0, math.nan], "finite"),
        ([0.0, math.inf], "finite"),
        (["a", "b"], "not numbers"),
    ],
)
def test_bad_edges(edges: list[object], needle: str) -> None:
    with pytest.raises(AggregationError, match=needle):
        WindowAggregator("d", MODEL, input_edges=edges)  # type: ignore[arg-type]


def test_bad_use_is_a_named_error() -> None:
    a = WindowAggregator("d", MODEL)
    with pytest.raises(AggregationError, match="before open"):
        a.record_inference(1, False)
    with pytest.raises(AggregationError, match="before open"):
        a.close(T0)
    a.open(T0)
    with pytest.raises(AggregationError, match="latency"):
        a.record_inference(-1, False)
    with pytest.raises(AggregationError, match="not after its start"):
        a.close(T0)
    with pytest.raises(AggregationError, match="65535 s maximum"):
        a.close(T0 + 70_000)
    with pytest.raises(AggregationError):
        a.open(math.nan)
    for bad in ({"first_seq": -1}, {"input_feature": 256}, {"max_latency_samples": 0}):
        with pytest.raises(AggregationError):
            WindowAggregator("d", MODEL, **bad)  # type: ignore[arg-type]
    # Nothing recorded before the failures was lost: the window still closes with its counts.
    a.record_inference(5, True)
    assert a.close(T0 + 5).inferences == 1


# ----------------------------------------------------------------------------- server side


def mw(device: str, seq: int, **kw: object) -> MetricsWindow:
    fields: dict[str, object] = dict(
        device_id=device,
        seq=seq,
        window_start_s=1000 + 3600 * seq,
        window_len_s=3600,
        duty_cycle=0.1,
        inferences=100,
        positives=10,
        false_positives=1,
        latency_p50_us=5,
        latency_p95_us=10,
        latency_max_us=20,
        model=MODEL,
        output_hist=[50, 50],
    )
    fields.update(kw)
    return MetricsWindow(**fields)  # type: ignore[arg-type]


def test_merge_sums_counts_and_recomputes_rates() -> None:
    windows = [
        mw("a", 0, battery_pct=90.0),
        mw(
            "a",
            1,
            battery_pct=88.0,
            inferences=300,
            positives=30,
            false_positives=6,
            latency_p95_us=30,
            latency_max_us=99,
            fallback_level=1,
            output_hist=[100, 200],
            input_hist=[1, 2, 3],
            input_feature=2,
        ),
        mw("a", 1, battery_pct=88.0),  # duplicate delivery (QoS 1): dropped
        mw("b", 5, battery_pct=50.0, duty_cycle=0.3, input_hist=[4, 5, 6], input_feature=2),
        mw("b", 6, battery_pct=47.0, charging=True),  # charging: no drain figure for this pair
        mw("b", 7, battery_pct=45.0),
    ]
    t = merge_windows(windows)
    assert (t.windows, t.devices, t.duplicates_dropped) == (5, 2, 1)
    # inferences 100+300+100+100+100 = 700; positives 10+30+10+10+10 = 70; fps 1+6+1+1+1 = 10
    assert (t.inferences, t.positives, t.false_positives) == (700, 70, 10)
    assert t.positive_rate == pytest.approx(0.1)
    assert t.false_positive_ratio == pytest.approx(10 / 70)
    # active seconds: .1*3600*4 + .3*3600 = 1440 + 1080 = 2520 over 5*3600 = 18000 s
    assert t.duty_cycle == pytest.approx(2520 / 18000)
    assert t.fallback_rate == pytest.approx(300 / 700)
    assert t.latency_max_us == 99
    # inference-weighted p95: (10*100 + 30*300 + 10*300) / 700 = 13000 / 700
    assert t.latency_p95_weighted_us == pytest.approx(13000 / 700)
    assert t.output_hist == [50 + 100 + 50 + 50 + 50, 50 + 200 + 50 + 50 + 50]
    assert t.input_hist == {2: [5, 7, 9]}
    # drain: a: 90 -> 88 between window ends one hour apart = 2 %/h; b: both pairs (5,6) and (6,7) touch
    # the charging window 6, so b has no figure -> the cohort mean is a's 2 %/h.
    assert t.battery_drain_pct_per_h == pytest.approx(2.0)
    assert t.shadow_agreement is None


def test_merge_feeds_drift_report() -> None:
    baseline = {"score": [50, 50]}
    t = merge_windows([mw("a", 0, output_hist=[80, 20]), mw("b", 0, output_hist=[80, 20])])
    report = drift_report(baseline, {"score": t.output_hist})
    # PSI of [.8,.2] against [.5,.5] = .41588831 (hand value in test_drift) -> significant, P2
    assert report.status == "significant" and report.p2_alert


def test_merge_rejects_incompatible_histograms_and_handles_empty() -> None:
    with pytest.raises(AggregationError, match="output_hist"):
        merge_windows([mw("a", 0), mw("b", 0, output_hist=[1, 1, 1])])
    empty = merge_windows([])
    assert empty.windows == 0 and empty.positive_rate is None and empty.duty_cycle is None
    assert empty.battery_drain_pct_per_h is None


def test_sequence_tracker() -> None:
    tr = SequenceTracker()
    got = [(s, tr.observe("d", s)) for s in (7, 8, 8, 12, 10, 9, 10, 11, 13, 3)]
    verdicts = [(s, r.verdict, r.missing) for s, r in got]
    assert verdicts == [
        (7, "new", 0),  # first seen
        (8, "new", 0),
        (8, "duplicate", 0),
        (12, "gap", 3),  # 9, 10, 11 missing
        (10, "late", 0),
        (9, "late", 0),
        (10, "duplicate", 0),
        (11, "late", 0),
        (13, "new", 0),
        (3, "duplicate", 0),  # older than anything tracked
    ]
    assert tr.missing("d") == []
    assert tr.observe("other", 0).verdict == "new"
    small = SequenceTracker(max_missing_per_device=2)
    assert small.observe("d", 0).verdict == "new"
    assert small.observe("d", 10).missing == 9
    assert small.missing("d") == [8, 9]
