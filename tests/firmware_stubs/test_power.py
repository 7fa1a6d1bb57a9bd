"""Power model: hand-computed drains, charging, the voltage curve, remaining life and bad inputs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_stubs.checked import SpecError
from firmware_stubs.hardware_profiles import CORTEX_M4F, get_profile
from firmware_stubs.power import (
    VOLTAGE_CURVES,
    BatterySpec,
    Chemistry,
    NoCharging,
    PluggedIn,
    PowerModel,
    SolarCharging,
    voltage_at,
)

# A board that draws a flat 10 mA whatever it does, for round hand-computed numbers.
FLAT_10MA = dataclasses.replace(CORTEX_M4F, name="flat-10ma", sleep_ma=10.0, active_ma=10.0, radio_tx_ma=0.0)


def test_1000mah_at_10ma_for_an_hour_leaves_99_percent() -> None:
    pm = PowerModel(FLAT_10MA, BatterySpec(capacity_mah=1000))
    pm.advance_to(3600)
    assert pm.percent == pytest.approx(99.0)
    report = pm.report()
    assert report.drawn_mah == pytest.approx(10.0)
    assert report.average_ma == pytest.approx(10.0)
    assert report.energy_j == pytest.approx(10.0 * 3.6 * 3.0)  # mAh -> coulombs x 3.0 V supply
    assert report.estimated_life_s == pytest.approx(99 * 3600)  # 990 mAh left at 10 mA


def test_inference_and_radio_on_the_nrf52840_class_profile() -> None:
    pm = PowerModel(get_profile("cortex-m4f"))  # 1000 mAh LiPo, 3.0 V
    pm.advance_to(3600)
    pm.record_active(300.0)  # 300 s of CPU inside that hour
    on_air = pm.record_radio(1_000_000)  # at 15 625 B/s -> 64 s
    assert on_air == pytest.approx(64.0)
    # sleep 0.0015 mA for 3300 s + active 3.3 mA for 300 s + radio 4.8 mA for 64 s:
    # (0.0015*3300 + 3.3*300 + 4.8*64) / 3600 = (4.95 + 990 + 307.2) / 3600 = 1302.15 / 3600 = 0.36170833 mAh
    assert pm.report().drawn_mah == pytest.approx(0.36170833, rel=1e-6)
    assert pm.percent == pytest.approx(100 - 0.036170833, rel=1e-9)
    assert pm.report().active_s == 300.0


def test_sleep_only_profile_matches_datasheet_sleep_current() -> None:
    pm = PowerModel(get_profile("esp32-s3"))  # 2000 mAh, 0.24 mA light sleep
    pm.advance_to(24 * 3600)
    assert pm.report().drawn_mah == pytest.approx(0.24 * 24)
    assert pm.report().estimated_life_s == pytest.approx((2000 - 5.76) / 0.24 * 3600)


def test_battery_empties_to_zero_never_below() -> None:
    pm = PowerModel(FLAT_10MA, BatterySpec(capacity_mah=10))
    pm.advance_to(2 * 3600)  # 20 mAh demanded of 10
    assert pm.percent == 0.0
    assert pm.depleted
    state = pm.state()
    assert state.percent == 0.0 and state.voltage == pytest.approx(3.0)


def test_plugged_charging_adds_charge_only_while_plugged() -> None:
    pm = PowerModel(FLAT_10MA, BatterySpec(capacity_mah=1000, initial_percent=50),
                    PluggedIn(charge_ma=110, from_s=1800))
    pm.advance_to(1700)
    assert not pm.state().charging
    pm.advance_to(3600)
    # 500 - 10 mAh drawn + 110 mA * 0.5 h = 545 mAh
    assert pm.percent == pytest.approx(54.5)
    assert pm.state().charging
    assert pm.report().charged_mah == pytest.approx(55.0)
    assert pm.report().estimated_life_s == pytest.approx(545 / 10 * 3600)  # draw only, charger ignored


def test_charging_stops_at_full() -> None:
    pm = PowerModel(FLAT_10MA, BatterySpec(capacity_mah=1000, initial_percent=99), PluggedIn(charge_ma=1000))
    pm.advance_to(3600)
    assert pm.percent == pytest.approx(100.0)
    assert not pm.state().charging  # full: the charger is connected but no longer charging
    # Only what fitted was stored: full = 990 initial + charged - 10 drawn -> charged = 20 mAh, not 1000.
    assert pm.report().charged_mah == pytest.approx(20.0)


def test_solar_day_delivers_the_half_sine_integral() -> None:
    no_load = dataclasses.replace(FLAT_10MA, sleep_ma=0.0, active_ma=0.0)
    solar = SolarCharging(peak_ma=100, sunrise_h=6, sunset_h=18)
    pm = PowerModel(no_load, BatterySpec(capacity_mah=10_000, initial_percent=0), solar)
    pm.advance_to(5.9 * 3600)
    assert pm.report().charged_mah == 0.0 and not pm.state().charging
    pm.advance_to(12 * 3600)
    assert pm.state().charging
    assert solar.current_ma(12 * 3600) == pytest.approx(100.0)  # solar noon
    # 6:00 -> 12:00 is half the arch: peak * 12 h / pi
    assert pm.report().charged_mah == pytest.approx(100 * 12 / math.pi, rel=1e-6)
    pm.advance_to(48 * 3600)
    assert pm.report().charged_mah == pytest.approx(2 * 2 * 100 * 12 / math.pi, rel=1e-6)  # two whole days


def test_solar_start_hour_shifts_the_day() -> None:
    solar = SolarCharging(peak_ma=100, start_hour=12)  # t = 0 is noon
    assert solar.current_ma(0) == pytest.approx(100.0)
    assert solar.cumulative_mah(6 * 3600) == pytest.approx(100 * 12 / math.pi, rel=1e-9)


def test_step_size_does_not_change_the_result() -> None:
    def run(step: float) -> float:
        pm = PowerModel(FLAT_10MA, BatterySpec(capacity_mah=1000, initial_percent=20),
                        SolarCharging(peak_ma=40))
        t = 0.0
        while t < 36 * 3600:
            t = min(36 * 3600, t + step)
            pm.advance_to(t)
        return pm.percent

    assert run(7.0) == pytest.approx(run(36 * 3600), abs=1e-6)


@pytest.mark.parametrize("chemistry", list(Chemistry))
def test_voltage_curve_is_strictly_increasing(chemistry: Chemistry) -> None:
    volts = [voltage_at(chemistry, p) for p in np.linspace(0, 100, 401)]
    assert np.all(np.diff(volts) > 0)
    assert volts[0] == VOLTAGE_CURVES[chemistry][0][1] and volts[-1] == VOLTAGE_CURVES[chemistry][-1][1]


def test_lipo_curve_endpoints() -> None:
    assert voltage_at("lipo", 100) == 4.2
    assert voltage_at("lipo", 0) == 3.0


def test_voltage_follows_the_battery_down() -> None:
    pm = PowerModel(FLAT_10MA, BatterySpec(capacity_mah=100))
    readings = []
    for hour in range(1, 11):
        pm.advance_to(hour * 3600)
        readings.append(pm.state().voltage)
    assert np.all(np.diff(readings) < 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"capacity_mah": -1}, "capacity_mah"), ({"capacity_mah": 0}, "capacity_mah"),
     ({"capacity_mah": float("nan")}, "capacity_mah"),
     ({"capacity_mah": 100, "initial_percent": 120}, "initial_percent"),
     ({"capacity_mah": 100, "chemistry": "nimh"}, "chemistry")],
)  # fmt: skip
def test_bad_battery_specs_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError, match=field):
        BatterySpec(**kwargs)  # type: ignore[arg-type]


def test_bad_charge_schedules() -> None:
    with pytest.raises(SpecError, match="charge_ma"):
        PluggedIn(charge_ma=-5)
    with pytest.raises(SpecError, match="until_s"):
        PluggedIn(charge_ma=5, from_s=100, until_s=50)
    with pytest.raises(SpecError, match="sunset_h"):
        SolarCharging(peak_ma=5, sunrise_h=18, sunset_h=6)
    with pytest.raises(ValueError, match="not rechargeable"):
        PowerModel(CORTEX_M4F, BatterySpec(capacity_mah=220, chemistry="cr2032"), PluggedIn(charge_ma=5))
    PowerModel(CORTEX_M4F, BatterySpec(capacity_mah=220, chemistry="cr2032"), NoCharging())  # fine


def test_bad_readings_and_work_are_refused_and_change_nothing() -> None:
    pm = PowerModel(CORTEX_M4F)
    pm.advance_to(100)
    before = pm.report()
    with pytest.raises(ValueError, match="go back"):
        pm.advance_to(50)
    with pytest.raises(ValueError, match="active seconds"):
        pm.record_active(-1)
    with pytest.raises(ValueError, match="active seconds"):
        pm.record_active(float("inf"))
    with pytest.raises(ValueError, match="radio bytes"):
        pm.record_radio(-5)
    with pytest.raises(ValueError, match="radio bytes"):
        pm.record_radio(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"within 0\.\.100 %"):
        voltage_at("lipo", 101)
    with pytest.raises(ValueError, match="not a valid Chemistry"):
        voltage_at("nimh", 50)
    assert pm.report() == before


def test_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown hardware class 'cortex-m7'"):
        get_profile("cortex-m7")


def test_profile_with_impossible_figures_is_refused() -> None:
    with pytest.raises(ValueError, match="radio_bytes_per_s"):
        PowerModel(dataclasses.replace(CORTEX_M4F, radio_bytes_per_s=0.0))
    with pytest.raises(ValueError, match="sleep_ma"):
        PowerModel(dataclasses.replace(CORTEX_M4F, sleep_ma=-1.0))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 7200), st.floats(0, 50), st.integers(0, 2_000_000)), max_size=25))
def test_any_sequence_of_work_adds_up_to_the_documented_equation(
    steps: list[tuple[float, float, int]],
) -> None:
    profile = get_profile("esp32-s3")
    pm = PowerModel(profile, BatterySpec(capacity_mah=1e9))  # never empties: no clamp in play
    t = active = radio_bytes = 0.0
    for dt, active_s, n_bytes in steps:
        t += dt
        pm.advance_to(t)
        pm.record_active(active_s)
        pm.record_radio(n_bytes)
        active += active_s
        radio_bytes += n_bytes
        assert 0.0 <= pm.state().percent <= 100.0
    # docs/hardware.md: [sleep (T - A) + active A + radio R] / 3600, with R = bytes / rate
    expected = (0.24 * (t - active) + 40.0 * active + 283.0 * radio_bytes / 125_000) / 3600
    assert pm.report().drawn_mah == pytest.approx(expected, rel=1e-9, abs=1e-12)
