"""Sensor streams: determinism, event mix, drift, bursts, faults, feedback, bad inputs.

Uses the real committed KWS recording and scikit-learn's digits through converters.reference, plus
small hand-made pools where a property is easier to see on them.
"""

from __future__ import annotations

import numpy as np
import pytest

from converters.features import FeatureSpec
from converters.reference.datasets import load_kws_meta
from firmware_stubs.checked import SpecError
from firmware_stubs.sensor_streams import (
    BurstSpec,
    DriftSpec,
    FaultSpec,
    FeedbackSpec,
    SensorStream,
    StreamConfig,
    StreamPools,
    WindowPool,
)
from firmware_stubs.sensors import digits_pools, kws_pools


@pytest.fixture(scope="module")
def kws() -> StreamPools:
    return kws_pools()


@pytest.fixture(scope="module")
def digits() -> StreamPools:
    return digits_pools(event_digit=0)


def small_pool(n: int = 40, n_events: int = 10) -> StreamPools:
    rng = np.random.default_rng(5)
    windows = rng.uniform(0.2, 0.8, size=(n, 4, 3)).astype(np.float32)
    is_event = np.zeros(n, dtype=bool)
    is_event[:n_events] = True
    labels = is_event.astype(np.int64)
    return StreamPools(nominal=WindowPool(windows=windows, labels=labels, is_event=is_event, name="small"))


def read_many(stream: SensorStream, times: np.ndarray) -> list:
    return [stream.read(float(t)) for t in times]


# ---------------------------------------------------------------------------------------- pools


def test_kws_pools_are_model_ready_and_aligned(kws: StreamPools) -> None:
    spec = FeatureSpec.model_validate(load_kws_meta()["feature_spec"])
    assert kws.nominal.input_shape == (*spec.input_shape, 1)  # (frames, mels, channel), as the models take
    assert kws.nominal.windows.dtype == np.float32
    assert kws.drifted is not None and kws.nominal.aligned_with(kws.drifted)
    # Events are exactly the keyword classes of the committed metadata (yes/no/up/down = 2..5).
    assert set(np.unique(kws.nominal.labels[kws.nominal.is_event])) <= {2, 3, 4, 5}
    assert kws.nominal.is_event.sum() > 20 and (~kws.nominal.is_event).sum() > 500
    assert kws.class_names[:2] == ("silence", "unknown")


def test_digits_pool_reuses_the_reference_preprocessing(digits: StreamPools) -> None:
    from converters.reference.digits import load_digits_task

    task = load_digits_task(0)
    np.testing.assert_array_equal(digits.nominal.windows, task.x_eval)
    assert digits.nominal.input_shape == (8, 8, 1)
    assert np.array_equal(digits.nominal.is_event, task.y_eval == 0)
    assert digits.nominal.windows.min() >= 0.0 and digits.nominal.windows.max() <= 1.0


# --------------------------------------------------------------------------------- determinism


def test_same_seed_same_samples_different_seed_different(kws: StreamPools) -> None:
    times = np.arange(50.0)
    a = read_many(SensorStream(kws, StreamConfig(seed=3)), times)
    b = read_many(SensorStream(kws, StreamConfig(seed=3)), times)
    c = read_many(SensorStream(kws, StreamConfig(seed=4)), times)
    assert all(np.array_equal(x.window, y.window) and x.label == y.label for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x.window, z.window) for x, z in zip(a, c, strict=True))
    assert [s.index for s in a] == list(range(50))


def test_event_fraction_is_respected(kws: StreamPools) -> None:
    stream = SensorStream(kws, StreamConfig(seed=1, event_fraction=0.2))
    events = [s.is_event for s in read_many(stream, np.arange(3000.0))]
    # Binomial(3000, 0.2): sd = 0.0073; 5 sd either side.
    assert abs(np.mean(events) - 0.2) < 0.037


def test_sequential_mode_replays_the_recording_in_order(kws: StreamPools) -> None:
    stream = SensorStream(kws, StreamConfig(mode="sequential"))
    samples = read_many(stream, np.arange(len(kws.nominal) + 2, dtype=float))
    np.testing.assert_array_equal(samples[7].window, kws.nominal.windows[7])
    np.testing.assert_array_equal(samples[len(kws.nominal) + 1].window, kws.nominal.windows[1])


# --------------------------------------------------------------------------------------- drift


def test_kws_drift_raises_the_noise_floor_from_its_start_time_only(kws: StreamPools) -> None:
    times = np.arange(0.0, 200.0, 1.0)
    plain = read_many(SensorStream(kws, StreamConfig(seed=2)), times)
    drifting = SensorStream(kws, StreamConfig(seed=2))
    drifting.inject_drift(DriftSpec(start_s=100, use_drifted_pool=True))
    drifted = read_many(drifting, times)
    before = [(p, d) for p, d in zip(plain, drifted, strict=True) if p.t_s < 100]
    after = [(p, d) for p, d in zip(plain, drifted, strict=True) if p.t_s >= 100]
    assert all(np.array_equal(p.window, d.window) and "drift" not in d.injected for p, d in before)
    # Same positions (same labels), louder background: the log-mel floor moves up.
    assert all(p.label == d.label and "drift" in d.injected for p, d in after)
    quiet_floor = np.mean([np.percentile(p.window, 10) for p, _ in after])
    loud_floor = np.mean([np.percentile(d.window, 10) for _, d in after])
    assert loud_floor - quiet_floor > 0.1


def test_feature_space_drift_on_digits(digits: StreamPools) -> None:
    stream = SensorStream(digits, StreamConfig(seed=0))
    stream.inject_drift(DriftSpec(start_s=30, shift=0.25, scale=0.8, noise_std=0.05))
    samples = read_many(stream, np.arange(60.0))
    ref = read_many(SensorStream(digits, StreamConfig(seed=0)), np.arange(60.0))
    for s, r in zip(samples[:30], ref[:30], strict=True):
        np.testing.assert_array_equal(s.window, r.window)
    before = np.mean([s.window.mean() for s in samples[:30]])
    after = np.mean([s.window.mean() for s in samples[30:]])
    assert after - before > 0.1  # background pixels (0) move to ~0.25
    assert all(s.window.min() >= 0.0 and s.window.max() <= 1.0 for s in samples[30:])  # clipped to range
    assert samples[45].window.dtype == np.float32


def test_stacked_drifts_apply_in_start_order() -> None:
    pools = small_pool()
    stream = SensorStream(pools, StreamConfig(value_range=None))
    stream.inject_drift(DriftSpec(start_s=20, shift=1.0))
    stream.inject_drift(DriftSpec(start_s=10, scale=2.0))
    s5, s15, s25 = (stream.read(t) for t in (5.0, 15.0, 25.0))
    ref = SensorStream(pools, StreamConfig(value_range=None))
    r5, r15, r25 = (ref.read(t) for t in (5.0, 15.0, 25.0))
    np.testing.assert_allclose(s5.window, r5.window)
    np.testing.assert_allclose(s15.window, r15.window * 2)
    np.testing.assert_allclose(s25.window, r25.window * 2 + 1)


def test_bad_drift_specs() -> None:
    with pytest.raises(SpecError, match="start_s"):
        DriftSpec(start_s=-1, shift=0.1)
    with pytest.raises(SpecError, match="changes nothing"):
        DriftSpec(start_s=5)
    with pytest.raises(SpecError, match="scale"):
        DriftSpec(start_s=5, scale=0)
    with pytest.raises(SpecError, match="noise_std"):
        DriftSpec(start_s=5, noise_std=float("nan"))
    with pytest.raises(ValueError, match="no drifted pool"):
        SensorStream(small_pool()).inject_drift(DriftSpec(start_s=5, use_drifted_pool=True))


# ------------------------------------------------------------------------------ bursts and faults


def test_burst_makes_every_window_an_event_for_its_duration(kws: StreamPools) -> None:
    stream = SensorStream(kws, StreamConfig(seed=9, event_fraction=0.0))
    stream.inject_burst(BurstSpec(start_s=10, duration_s=5))
    samples = read_many(stream, np.arange(0.0, 30.0, 0.5))
    in_burst = [s for s in samples if 10 <= s.t_s < 15]
    assert in_burst and all(s.is_event and "burst" in s.injected for s in in_burst)
    assert not any(s.is_event for s in samples if not 10 <= s.t_s < 15)


@pytest.mark.parametrize("kind", ["nan", "constant"])
def test_sensor_fault_window(kind: str, digits: StreamPools) -> None:
    stream = SensorStream(digits)
    stream.inject_fault(FaultSpec(kind=kind, start_s=5, duration_s=3, value=0.5))  # type: ignore[arg-type]
    samples = read_many(stream, np.arange(12.0))
    for s in samples:
        if 5 <= s.t_s < 8:
            assert (np.all(np.isnan(s.window)) if kind == "nan" else np.all(s.window == 0.5))
            assert f"fault:{kind}" in s.injected
        else:
            assert np.all(np.isfinite(s.window)) and len(np.unique(s.window)) > 1 and not s.injected


def test_permanent_fault_and_bad_fault_specs(digits: StreamPools) -> None:
    stream = SensorStream(digits)
    stream.inject_fault(FaultSpec(kind="nan", start_s=1))
    assert np.all(np.isnan(stream.read(10_000.0).window))
    with pytest.raises(SpecError, match="kind"):
        FaultSpec(kind="smoke", start_s=1)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="duration_s"):
        FaultSpec(kind="nan", start_s=1, duration_s=0)
    with pytest.raises(SpecError, match="start_s"):
        BurstSpec(start_s=-3, duration_s=1)


# ------------------------------------------------------------------------------------- feedback


def test_feedback_flags_exactly_the_non_events(kws: StreamPools) -> None:
    stream = SensorStream(kws, StreamConfig(seed=4, event_fraction=0.5))
    samples = read_many(stream, np.arange(400.0))
    for s in samples:
        stream.report_detection(s.index, 400.0)
    reports = stream.poll_feedback(400.0)
    assert {r.sample_index for r in reports} == {s.index for s in samples if not s.is_event}
    assert all(r.false_positive for r in reports)
    assert stream.poll_feedback(500.0) == []  # each report arrives once


def test_feedback_probability_and_delay_are_seeded(kws: StreamPools) -> None:
    def run() -> tuple[list[int], list[int]]:
        feedback = FeedbackSpec(report_probability=0.3, delay_s=60)
        cfg = StreamConfig(seed=6, event_fraction=0.0, feedback=feedback)
        stream = SensorStream(kws, cfg)
        for s in read_many(stream, np.arange(1000.0)):
            stream.report_detection(s.index, s.t_s)
        early = [r.sample_index for r in stream.poll_feedback(59.0)]
        return early, [r.sample_index for r in stream.poll_feedback(2000.0)]

    early, late = run()
    assert early == []  # the first detection at t=0 is due at t=60
    assert abs(len(late) / 1000 - 0.3) < 0.075  # Binomial(1000, 0.3): sd 0.0145, 5 sd
    assert late == sorted(late)  # oldest first
    assert run() == (early, late)


def test_feedback_bad_inputs_and_duplicates() -> None:
    stream = SensorStream(small_pool(), StreamConfig(event_fraction=0.0))
    with pytest.raises(ValueError, match="never read"):
        stream.report_detection(0, 0.0)
    sample = stream.read(1.0)
    stream.report_detection(sample.index, 1.0)
    stream.report_detection(sample.index, 2.0)  # repeated: no second report
    assert len(stream.poll_feedback(5.0)) == 1
    with pytest.raises(ValueError, match="never read"):
        stream.report_detection(99, 5.0)
    with pytest.raises(ValueError, match="integer"):
        stream.report_detection("0", 5.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="detection time"):
        stream.report_detection(0, float("nan"))


# ----------------------------------------------------------------------------------- bad inputs


def test_bad_pools_are_refused() -> None:
    w = np.zeros((3, 2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="labels"):
        WindowPool(windows=w, labels=np.array([0, 1]), is_event=np.array([True, False, False]))
    with pytest.raises(ValueError, match="is_event"):
        WindowPool(windows=w, labels=np.array([0, 1, 0]), is_event=np.array([1, 0, 0]))
    with pytest.raises(ValueError, match="NaN"):
        WindowPool(windows=np.full((3, 2), np.nan), labels=np.array([0, 1, 0]),
                   is_event=np.array([True, False, False]))
    with pytest.raises(ValueError, match="n >= 1"):
        WindowPool(windows=np.zeros((0, 2)), labels=np.zeros(0, dtype=int), is_event=np.zeros(0, dtype=bool))
    other = small_pool(n=40, n_events=5).nominal
    with pytest.raises(ValueError, match="not aligned"):
        StreamPools(nominal=small_pool().nominal, drifted=other)


def test_impossible_event_fractions_and_configs() -> None:
    no_events = small_pool(n_events=0)
    with pytest.raises(ValueError, match="no event windows"):
        SensorStream(no_events, StreamConfig(event_fraction=0.1))
    with pytest.raises(ValueError, match="no event windows"):
        SensorStream(no_events).inject_burst(BurstSpec(start_s=0, duration_s=1))
    with pytest.raises(SpecError, match="event_fraction"):
        StreamConfig(event_fraction=1.5)
    with pytest.raises(SpecError, match="sequential"):
        StreamConfig(mode="sequential", event_fraction=0.1)
    with pytest.raises(SpecError, match="value_range"):
        StreamConfig(value_range=(1.0, 0.0))


def test_time_going_back_is_refused_and_the_index_not_consumed() -> None:
    stream = SensorStream(small_pool())
    stream.read(10.0)
    with pytest.raises(ValueError, match="go back"):
        stream.read(5.0)
    assert stream.read(10.0).index == 1


def test_digits_provider_bad_arguments() -> None:
    with pytest.raises(ValueError, match="event_digit"):
        digits_pools(event_digit=10)
    with pytest.raises(ValueError, match="split"):
        digits_pools(split="test")
    with pytest.raises(ValueError, match="hop_frames"):
        kws_pools(hop_frames=0)
