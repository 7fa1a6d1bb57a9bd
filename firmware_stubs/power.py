"""Battery and power model: coulomb counting of the current a simulated board draws.

The device draws ``sleep_ma`` whenever it is not computing, ``active_ma`` instead of it while it
runs inference, and ``radio_tx_ma`` on top while it transmits (docs/hardware.md, "Power model")::

    drawn_mah(T) = [sleep_ma * (T - A) + active_ma * A + radio_tx_ma * R] / 3600

with T the elapsed seconds, A the on-target active seconds (host time x ``host_slowdown``) and
R = radio bytes / ``radio_bytes_per_s``. The regulator is taken as ideal and linear (battery current =
load current), so state of charge is ``100 * remaining_mah / capacity_mah``; energy is reported at the
supply rail (mAh x 3.6 x ``supply_volts`` = joules). A charge schedule adds current into the battery,
which never holds more than its capacity nor less than zero. Everything is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np

from firmware_stubs.checked import Checked, SpecError, spec
from firmware_stubs.hardware_profiles import HardwareProfile

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86_400.0
# While a charger is connected the model integrates in steps this long, so the battery's clamp at
# full and empty is applied at least once a minute whatever step the simulation takes.
CHARGE_STEP_S = 60.0


class Chemistry(StrEnum):
    LIPO = "lipo"  # single-cell lithium polymer / Li-ion, 4.2 V full, 3.0 V cut-off
    COIN_CELL = "cr2032"  # lithium coin cell, 3.0 V fresh, 2.0 V cut-off
    ALKALINE_2AA = "2xaa"  # two alkaline AA in series, 3.2 V fresh, 1.8 V cut-off


# Open-circuit voltage against state of charge (percent, volts), piecewise linear, strictly
# increasing. Typical low-rate discharge curves; docs/hardware.md shows them and where they come from.
VOLTAGE_CURVES: dict[Chemistry, tuple[tuple[float, float], ...]] = {
    Chemistry.LIPO: (
        (0, 3.00), (5, 3.45), (10, 3.60), (20, 3.68), (40, 3.76),
        (60, 3.85), (80, 3.98), (90, 4.06), (100, 4.20),
    ),
    Chemistry.COIN_CELL: ((0, 2.00), (5, 2.50), (10, 2.70), (50, 2.85), (90, 2.95), (100, 3.00)),
    Chemistry.ALKALINE_2AA: (
        (0, 1.80), (10, 2.20), (30, 2.40), (50, 2.50), (70, 2.60), (90, 2.85), (100, 3.20),
    ),
}  # fmt: skip
RECHARGEABLE: frozenset[Chemistry] = frozenset({Chemistry.LIPO})


def voltage_at(chemistry: Chemistry | str, percent: float) -> float:
    """Battery voltage at ``percent`` state of charge (0..100) on the chemistry's curve."""
    chem = Chemistry(chemistry)
    p = float(percent)
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"state of charge must be within 0..100 %, got {percent!r}")
    points = VOLTAGE_CURVES[chem]
    return float(np.interp(p, [pt[0] for pt in points], [pt[1] for pt in points]))


# Settings records are validated dataclasses (firmware_stubs.checked), not pydantic models: the simulated
# board runs in the device agent's process, which cannot afford pydantic's ~15 MB.


@dataclass(frozen=True, kw_only=True)
class BatterySpec(Checked):
    capacity_mah: float = spec(gt=0)
    initial_percent: float = spec(100.0, ge=0, le=100)
    chemistry: Chemistry = Chemistry.LIPO


@dataclass(frozen=True, kw_only=True)
class BatteryState:
    """What a fuel gauge reports."""

    percent: float
    voltage: float
    charging: bool


# ------------------------------------------------------------------------------------ charging


@dataclass(frozen=True, kw_only=True)
class _Schedule(Checked):
    def current_ma(self, t_s: float) -> float:
        raise NotImplementedError

    def cumulative_mah(self, t_s: float) -> float:
        """Charge delivered from t = 0 to ``t_s`` (closed form, so any step size gives the same total)."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class NoCharging(_Schedule):
    kind: Literal["none"] = "none"

    def current_ma(self, t_s: float) -> float:
        return 0.0

    def cumulative_mah(self, t_s: float) -> float:
        return 0.0


@dataclass(frozen=True, kw_only=True)
class PluggedIn(_Schedule):
    """A constant ``charge_ma`` from ``from_s`` (simulated seconds) until ``until_s`` (or forever)."""

    kind: Literal["plugged"] = "plugged"
    charge_ma: float = spec(gt=0)
    from_s: float = spec(0.0, ge=0)
    until_s: float | None = spec(None)

    def _validate(self) -> None:
        if self.until_s is not None and self.until_s <= self.from_s:
            raise SpecError("until_s", f"until_s ({self.until_s}) must be after from_s ({self.from_s})")

    def current_ma(self, t_s: float) -> float:
        on = t_s >= self.from_s and (self.until_s is None or t_s < self.until_s)
        return self.charge_ma if on else 0.0

    def cumulative_mah(self, t_s: float) -> float:
        end = t_s if self.until_s is None else min(t_s, self.until_s)
        return self.charge_ma * max(0.0, end - self.from_s) / SECONDS_PER_HOUR


@dataclass(frozen=True, kw_only=True)
class SolarCharging(_Schedule):
    """Daylight charging: a half-sine current from sunrise to sunset, ``peak_ma`` at solar noon.

    ``start_hour`` is the time of day at simulated t = 0.
    """

    kind: Literal["solar"] = "solar"
    peak_ma: float = spec(gt=0)
    sunrise_h: float = spec(6.0, ge=0, lt=24)
    sunset_h: float = spec(18.0, gt=0, le=24)
    start_hour: float = spec(0.0, ge=0, lt=24)

    def _validate(self) -> None:
        if self.sunset_h <= self.sunrise_h:
            raise SpecError("sunset_h", f"{self.sunset_h} must be after sunrise_h ({self.sunrise_h})")

    def _day_len_s(self) -> float:
        return (self.sunset_h - self.sunrise_h) * SECONDS_PER_HOUR

    def current_ma(self, t_s: float) -> float:
        tod = (t_s + self.start_hour * SECONDS_PER_HOUR) % SECONDS_PER_DAY - self.sunrise_h * SECONDS_PER_HOUR
        if tod <= 0 or tod >= self._day_len_s():
            return 0.0
        return self.peak_ma * math.sin(math.pi * tod / self._day_len_s())

    def _from_midnight_mah(self, abs_s: float) -> float:
        # Integral of peak * sin(pi x / D) dx = peak D / pi * (1 - cos(pi x / D)); a whole day: 2 peak D / pi.
        d = self._day_len_s()
        per_day = 2.0 * self.peak_ma * d / math.pi / SECONDS_PER_HOUR
        days, tod = divmod(abs_s, SECONDS_PER_DAY)
        x = min(max(tod - self.sunrise_h * SECONDS_PER_HOUR, 0.0), d)
        partial = self.peak_ma * d / math.pi * (1.0 - math.cos(math.pi * x / d)) / SECONDS_PER_HOUR
        return days * per_day + partial

    def cumulative_mah(self, t_s: float) -> float:
        offset = self.start_hour * SECONDS_PER_HOUR
        return self._from_midnight_mah(t_s + offset) - self._from_midnight_mah(offset)


ChargeSchedule = NoCharging | PluggedIn | SolarCharging  # told apart by ``kind``


# ---------------------------------------------------------------------------------------- model


@dataclass(frozen=True, kw_only=True)
class PowerReport:
    """Totals since the model started, for telemetry and simulation summaries."""

    elapsed_s: float
    active_s: float  # on-target seconds of computation
    radio_s: float
    drawn_mah: float  # by the load
    charged_mah: float  # stored into the battery by the charger
    energy_j: float  # drawn by the load, at the supply rail
    average_ma: float
    remaining_mah: float
    estimated_life_s: float  # remaining charge at the average draw so far, ignoring the charger


class PowerModel:
    """State of charge of one board's battery, advanced by elapsed time and recorded work.

    Times are the board clock's monotonic seconds; the first reading is taken at ``start_s``.
    """

    def __init__(
        self,
        profile: HardwareProfile,
        battery: BatterySpec | None = None,
        charging: ChargeSchedule | None = None,
        *,
        start_s: float = 0.0,
    ) -> None:
        self.profile = profile
        self.battery_spec = battery if battery is not None else BatterySpec(capacity_mah=profile.battery_mah)
        self.charging: ChargeSchedule = charging if charging is not None else NoCharging()
        if not isinstance(self.charging, NoCharging) and self.battery_spec.chemistry not in RECHARGEABLE:
            raise ValueError(
                f"a {self.battery_spec.chemistry.value} battery is not rechargeable; "
                f"use chemistry 'lipo' or no charge schedule"
            )
        for field in ("sleep_ma", "active_ma", "radio_tx_ma", "radio_bytes_per_s", "supply_volts"):
            value = getattr(profile, field)
            if not (math.isfinite(value) and value >= 0) or (field == "radio_bytes_per_s" and value == 0):
                raise ValueError(f"profile {profile.name!r} has an invalid {field}: {value!r}")
        if not math.isfinite(start_s):
            raise ValueError(f"start_s must be finite, got {start_s!r}")
        self._start = float(start_s)
        self._t = float(start_s)
        self._remaining = self.battery_spec.capacity_mah * self.battery_spec.initial_percent / 100.0
        self._drawn = 0.0
        self._charged = 0.0
        self._active_s = 0.0
        self._radio_s = 0.0

    # -- time ------------------------------------------------------------------------------------

    def advance_to(self, t_s: float) -> None:
        """Account the idle draw (and any charging) from the last reading up to ``t_s``."""
        t = float(t_s)
        if not math.isfinite(t) or t < self._t:
            raise ValueError(f"power model time cannot go back from {self._t} s to {t_s!r} s")
        if isinstance(self.charging, NoCharging):
            self._draw(self.profile.sleep_ma * (t - self._t) / SECONDS_PER_HOUR)
            self._t = t
            return
        while self._t < t:
            step_end = min(t, self._t + CHARGE_STEP_S)
            sched_t0, sched_t1 = self._t - self._start, step_end - self._start
            gained = self.charging.cumulative_mah(sched_t1) - self.charging.cumulative_mah(sched_t0)
            self._draw(self.profile.sleep_ma * (step_end - self._t) / SECONDS_PER_HOUR)
            room = self.battery_spec.capacity_mah - self._remaining
            stored = min(gained, room)
            self._remaining += stored
            self._charged += stored
            self._t = step_end

    def _draw(self, mah: float) -> None:
        self._drawn += mah
        self._remaining = max(0.0, self._remaining - mah)

    # -- work --------------------------------------------------------------------------------------

    def record_active(self, device_seconds: float) -> float:
        """Account ``device_seconds`` of on-target computation; returns the mAh it cost beyond sleep."""
        s = _non_negative(device_seconds, "active seconds")
        mah = (self.profile.active_ma - self.profile.sleep_ma) * s / SECONDS_PER_HOUR
        self._active_s += s
        self._draw(mah)
        return mah

    def record_radio(self, n_bytes: int) -> float:
        """Account transmitting ``n_bytes``; returns the seconds on air."""
        if isinstance(n_bytes, bool) or not isinstance(n_bytes, int | np.integer) or n_bytes < 0:
            raise ValueError(f"radio bytes must be a non-negative integer, got {n_bytes!r}")
        seconds = int(n_bytes) / self.profile.radio_bytes_per_s
        self._radio_s += seconds
        self._draw(self.profile.radio_tx_ma * seconds / SECONDS_PER_HOUR)
        return seconds

    # -- readings ----------------------------------------------------------------------------------

    @property
    def time_s(self) -> float:
        return self._t

    @property
    def percent(self) -> float:
        return 100.0 * self._remaining / self.battery_spec.capacity_mah

    @property
    def depleted(self) -> bool:
        return self._remaining <= 0.0

    def state(self) -> BatteryState:
        pct = min(100.0, max(0.0, self.percent))
        charging = self.charging.current_ma(self._t - self._start) > 0 and pct < 100.0
        volts = voltage_at(self.battery_spec.chemistry, pct)
        return BatteryState(percent=pct, voltage=volts, charging=charging)

    def report(self) -> PowerReport:
        elapsed = self._t - self._start
        average = self._drawn / (elapsed / SECONDS_PER_HOUR) if elapsed > 0 else self.profile.sleep_ma
        life = self._remaining / average * SECONDS_PER_HOUR if average > 0 else math.inf
        return PowerReport(
            elapsed_s=elapsed,
            active_s=self._active_s,
            radio_s=self._radio_s,
            drawn_mah=self._drawn,
            charged_mah=self._charged,
            energy_j=self._drawn * 3.6 * self.profile.supply_volts,
            average_ma=average,
            remaining_mah=self._remaining,
            estimated_life_s=life,
        )


def _non_negative(value: float, what: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return v
