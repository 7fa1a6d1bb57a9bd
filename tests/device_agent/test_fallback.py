"""FallbackPolicy: a plain domain object, exercised window by window."""

from __future__ import annotations

import pytest

from device_agent.fallback import (
    FallbackEvent,
    FallbackPolicy,
    FallbackThresholds,
    SwitchReason,
    WindowObservation,
)


def obs(
    *,
    p95: int = 100,
    battery: float | None = 80.0,
    charging: bool = False,
    positives: int = 0,
    fps: int = 0,
    inferences: int = 60,
) -> WindowObservation:
    return WindowObservation(
        inferences=inferences,
        latency_p95_us=p95,
        positives=positives,
        false_positives=fps,
        battery_pct=battery,
        charging=charging,
    )


def drive(policy: FallbackPolicy, o: WindowObservation, n: int) -> list[FallbackEvent]:
    """Feed n identical windows, committing every proposal (as the loop does after a successful load)."""
    events = []
    for _ in range(n):
        ev = policy.observe_window(o)
        if ev is not None:
            policy.commit(ev)
            events.append(ev)
    return events


def test_latency_steps_down_after_k_windows_only() -> None:
    p = FallbackPolicy(3, FallbackThresholds(max_latency_us=1000, latency_windows=3))
    assert p.observe_window(obs(p95=2000)) is None
    assert p.observe_window(obs(p95=2000)) is None
    ev = p.observe_window(obs(p95=2000))
    assert ev is not None and (ev.from_level, ev.to_level, ev.reason) == (0, 1, SwitchReason.LATENCY)
    assert p.level == 0  # a proposal changes nothing until committed
    p.commit(ev)
    assert p.level == 1


def test_latency_streak_is_broken_by_a_fast_window() -> None:
    p = FallbackPolicy(3, FallbackThresholds(max_latency_us=1000, latency_windows=2))
    assert p.observe_window(obs(p95=2000)) is None
    assert p.observe_window(obs(p95=500)) is None
    assert p.observe_window(obs(p95=2000)) is None
    assert p.observe_window(obs(p95=2000)) is not None


def test_empty_window_does_not_count_as_slow() -> None:
    p = FallbackPolicy(2, FallbackThresholds(max_latency_us=10, latency_windows=1))
    assert p.observe_window(obs(p95=0, inferences=0)) is None


def test_battery_low_steps_down_one_level_per_window_and_recovers_with_hysteresis() -> None:
    t = FallbackThresholds(min_battery_pct=20, battery_margin_pct=5, recover_windows=2)
    p = FallbackPolicy(3, t)
    down = drive(p, obs(battery=15), 3)
    assert [(e.from_level, e.to_level) for e in down] == [(0, 1), (1, 2)]  # nothing below the last level
    assert all(e.reason is SwitchReason.BATTERY for e in down)
    # Inside the band (20..25 %): neither low nor clear, so no climbing however long.
    assert drive(p, obs(battery=22), 10) == []
    assert p.level == 2
    up = drive(p, obs(battery=30), 4)
    assert [(e.from_level, e.to_level, e.reason) for e in up] == [
        (2, 1, SwitchReason.RECOVERED),
        (1, 0, SwitchReason.RECOVERED),
    ]


def test_charging_clears_the_battery_condition() -> None:
    p = FallbackPolicy(2, FallbackThresholds(min_battery_pct=20, recover_windows=1), level=1)
    assert p.observe_window(obs(battery=5, charging=True)) is not None  # recovered, not battery


def test_false_positive_rate_needs_enough_positives() -> None:
    t = FallbackThresholds(max_false_positive_rate=0.5, min_positives=5, fp_windows=2)
    p = FallbackPolicy(2, t)
    assert drive(p, obs(positives=4, fps=4), 5) == []  # too few positives to judge
    ev = drive(p, obs(positives=10, fps=6), 2)
    assert len(ev) == 1 and ev[0].reason is SwitchReason.FALSE_POSITIVES
    assert ev[0].to_telemetry("dev-1", 0).reason == "false_positives"  # schema 1.1 carries it as itself


def test_backoff_doubles_recovery_time_for_a_level_that_keeps_failing() -> None:
    t = FallbackThresholds(max_latency_us=1000, latency_windows=1, recover_windows=2, max_backoff_factor=4)
    p = FallbackPolicy(2, t)
    waits = []
    for _ in range(4):
        assert drive(p, obs(p95=5000), 1)[0].reason is SwitchReason.LATENCY
        n = 0
        while p.level == 1:
            drive(p, obs(p95=100), 1)
            n += 1
        waits.append(n)
    assert waits == [4, 8, 8, 8]  # 2 x 2^1, 2 x 2^2, then capped at 2 x 4


def test_unusable_levels_are_skipped_both_ways() -> None:
    p = FallbackPolicy(4, FallbackThresholds(min_battery_pct=20, recover_windows=1))
    assert p.mark_unusable(1, SwitchReason.MEMORY, "arena 221 KB > 160 KB") is None  # not the running level
    ev = p.observe_window(obs(battery=10))
    assert ev is not None and ev.to_level == 2
    p.commit(ev)
    ev = p.observe_window(obs(battery=90))
    assert ev is not None and ev.to_level == 0  # climbs over the unusable level
    with pytest.raises(ValueError, match="unusable"):
        p.commit(FallbackEvent(0, 1, SwitchReason.MANUAL, "x"))


def test_load_failure_of_running_level_proposes_next_usable() -> None:
    p = FallbackPolicy(3)
    p.mark_unusable(2, SwitchReason.LOAD_FAILED, "corrupt")
    ev = p.mark_unusable(0, SwitchReason.LOAD_FAILED, "corrupt")
    assert ev is not None and (ev.to_level, ev.reason) == (1, SwitchReason.LOAD_FAILED)


def test_invoke_failures_must_be_consecutive() -> None:
    p = FallbackPolicy(2, FallbackThresholds(max_consecutive_errors=3))
    assert p.on_invoke_failure("x") is None
    assert p.on_invoke_failure("x") is None
    p.on_invoke_success()
    assert p.on_invoke_failure("x") is None
    assert p.on_invoke_failure("x") is None
    ev = p.on_invoke_failure("boom")
    assert ev is not None and ev.reason is SwitchReason.INVOKE_FAILED and "boom" in ev.detail


def test_nothing_below_the_last_level() -> None:
    p = FallbackPolicy(1, FallbackThresholds(min_battery_pct=50))
    assert p.observe_window(obs(battery=1)) is None
    assert p.mark_unusable(0, SwitchReason.MEMORY, "too big") is None


def test_reset_forgets_unusable_levels() -> None:
    p = FallbackPolicy(2, FallbackThresholds(recover_windows=1), level=1)
    p.mark_unusable(0, SwitchReason.MEMORY, "x")
    assert p.observe_window(obs()) is None
    p.reset(1)
    assert p.observe_window(obs()) is not None


@pytest.mark.parametrize("kwargs", [{"levels": 0}, {"levels": 2, "level": 2}, {"levels": 2, "level": -1}])
def test_bad_construction(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        FallbackPolicy(**kwargs)


def test_thresholds_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        FallbackThresholds(latency_windows=0)
    with pytest.raises(ValueError):
        FallbackThresholds(max_false_positive_rate=1.5)


def test_policy_does_not_climb_above_a_level_it_was_told_to_run() -> None:
    p = FallbackPolicy(3, FallbackThresholds(min_battery_pct=20, recover_windows=1))
    p.follow(1)  # e.g. an operator reverted to the level-1 model
    assert drive(p, obs(battery=90), 5) == []
    ev = drive(p, obs(battery=10), 1)
    assert ev[0].to_level == 2
    up = drive(p, obs(battery=90), 5)
    assert [(e.from_level, e.to_level) for e in up] == [(2, 1)]


@pytest.mark.parametrize("reason", list(SwitchReason))
def test_every_switch_reason_is_sent_as_itself_and_the_server_accepts_it(reason: SwitchReason) -> None:
    from telemetry import codec, device_codec

    event = FallbackEvent(0, 1, reason, "detail").to_telemetry(
        "dev-1", 7, device_codec.ModelRef(name="m", version=2, variant="float32")
    )
    assert isinstance(event, device_codec.FallbackSwitched)
    back = codec.decode(device_codec.encode(event))
    assert (back.reason, back.detail, back.model.version) == (reason.value, "detail", 2)
