from __future__ import annotations

import pytest

from device_agent.energy_policy import EnergyThresholds, UpdateEnergyPolicy


def test_defers_below_threshold_and_resumes_only_above_margin() -> None:
    p = UpdateEnergyPolicy(EnergyThresholds(min_battery_pct=30, margin_pct=5))
    assert p.decide(50, False).allowed
    gate = p.decide(29.9, False)
    assert not gate.allowed and "deferred" in gate.reason and "29.9" in gate.reason
    assert p.deferring
    assert not p.decide(32, False).allowed  # inside the band after deferring
    assert p.decide(35, False).allowed
    assert p.decide(32, False).allowed  # inside the band when not deferring


def test_charging_or_mains_always_allows() -> None:
    p = UpdateEnergyPolicy()
    assert not p.decide(5, False).allowed
    assert p.decide(5, True).allowed and "charging" in p.decide(5, True).reason
    assert p.decide(None, False).allowed


def test_thresholds_validated() -> None:
    with pytest.raises(ValueError):
        EnergyThresholds(min_battery_pct=120)
