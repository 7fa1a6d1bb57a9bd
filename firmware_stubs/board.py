"""The hardware interface the device agent runs on, and the simulated board that implements it.

The agent touches hardware only through :class:`Board`; a real board implements the same protocol
(docs/hardware.md, "A real board"). :class:`SimulatedBoard` composes a clock, a sensor stream, a
power model and a flash area; it holds no product logic (no fallback, OTA or MQTT decisions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from firmware_stubs.clock import Clock, SimClock
from firmware_stubs.flash import DEFAULT_STATE_BYTES, FlashArea
from firmware_stubs.hardware_profiles import HardwareProfile, get_profile
from firmware_stubs.power import BatterySpec, BatteryState, ChargeSchedule, PowerModel, PowerReport
from firmware_stubs.sensor_streams import Feedback, SensorSample, SensorStream, StreamConfig
from firmware_stubs.sensors import Task, make_stream


class BrownoutError(RuntimeError):
    """The battery is empty: the board cannot run until it is charged."""


@dataclass(frozen=True, kw_only=True)
class EnergyUse:
    """What one :meth:`Board.record_energy` call was accounted as, on the target."""

    device_active_s: float  # host seconds x host_slowdown
    radio_s: float
    charge_mah: float


@runtime_checkable
class Storage(Protocol):
    """Where the OTA slots and the agent's state live, and how much of it there is."""

    root: Path
    budget_bytes: int

    def used_bytes(self) -> int: ...

    def ensure_room(self, n_bytes: int, *, replacing: Path | str | None = None) -> None:
        """Raise ``OSError(ENOSPC)`` unless ``n_bytes`` more bytes fit."""
        ...


@runtime_checkable
class Board(Protocol):
    @property
    def profile(self) -> HardwareProfile: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def storage(self) -> Storage: ...

    def read_sensor(self) -> SensorSample:
        """The next model-ready input window (blocks until the sensor has one on a real board)."""
        ...

    def battery(self) -> BatteryState: ...

    def record_energy(self, *, active_seconds: float = 0.0, radio_bytes: int = 0) -> EnergyUse:
        """Account CPU time (as measured by this process) and bytes sent, so the power model sees them."""
        ...

    def report_detection(self, sample_index: int) -> None:
        """The agent acted on this sample (e.g. woke up); a user may later flag it as false."""
        ...

    def poll_feedback(self) -> list[Feedback]:
        """User reports received since the last poll."""
        ...

    def reboot(self) -> None: ...


def _finite_non_negative(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


class SimulatedBoard:
    """A :class:`Board` over simulated parts.

    On a :class:`SimClock`, ``record_energy`` moves the clock on by the target-equivalent time it
    accounts (computing and transmitting take time on the device); on a real clock time has passed
    already. ``reboot()`` only raises a flag (``reboot_requested``) and calls ``on_reboot``: the
    agent's supervisor restarts the agent and calls :meth:`acknowledge_reboot`.
    """

    def __init__(
        self,
        profile: HardwareProfile,
        *,
        stream: SensorStream,
        flash: FlashArea,
        power: PowerModel | None = None,
        clock: Clock | None = None,
        on_reboot: Callable[[], None] | None = None,
    ) -> None:
        self._profile = profile
        self._clock: Clock = clock if clock is not None else SimClock()
        self._start = self._clock.monotonic()
        self.stream = stream
        self.flash = flash
        self.power = power if power is not None else PowerModel(profile, start_s=self._start)
        if self.power.profile != profile:
            raise ValueError(f"power model is for {self.power.profile.name!r}, board is {profile.name!r}")
        self._on_reboot = on_reboot
        self.reboot_requested = False
        self.reboot_count = 0

    # -- Board -----------------------------------------------------------------------------------

    @property
    def profile(self) -> HardwareProfile:
        return self._profile

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def storage(self) -> FlashArea:
        return self.flash

    def _settle(self) -> float:
        t = self._clock.monotonic()
        self.power.advance_to(t)
        return t

    def read_sensor(self) -> SensorSample:
        t = self._settle()
        if self.power.depleted:
            raise BrownoutError(f"{self._profile.name}: battery empty at t={t - self._start:.1f} s")
        return self.stream.read(t - self._start, timestamp=self._clock.now())

    def battery(self) -> BatteryState:
        self._settle()
        return self.power.state()

    def record_energy(self, *, active_seconds: float = 0.0, radio_bytes: int = 0) -> EnergyUse:
        # Validate both before accounting either, so a bad call records nothing.
        host_s = _finite_non_negative(active_seconds, "active_seconds")
        if isinstance(radio_bytes, bool) or not isinstance(radio_bytes, int) or radio_bytes < 0:
            raise ValueError(f"radio_bytes must be a non-negative integer, got {radio_bytes!r}")
        self._settle()
        device_s = host_s * self._profile.host_slowdown
        charge = self.power.record_active(device_s)
        radio_s = self.power.record_radio(radio_bytes)
        charge += self._profile.radio_tx_ma * radio_s / 3600.0
        if isinstance(self._clock, SimClock):
            self._clock.advance(device_s + radio_s)
        return EnergyUse(device_active_s=device_s, radio_s=radio_s, charge_mah=charge)

    def report_detection(self, sample_index: int) -> None:
        self.stream.report_detection(sample_index, self._clock.monotonic() - self._start)

    def poll_feedback(self) -> list[Feedback]:
        return self.stream.poll_feedback(self._clock.monotonic() - self._start)

    def reboot(self) -> None:
        self.reboot_requested = True
        self.reboot_count += 1
        if self._on_reboot is not None:
            self._on_reboot()

    # -- simulator only --------------------------------------------------------------------------

    def acknowledge_reboot(self) -> None:
        self.reboot_requested = False

    def power_report(self) -> PowerReport:
        self._settle()
        return self.power.report()


def make_simulated_board(
    profile: HardwareProfile | str,
    *,
    task: Task,
    flash_root: Path | str,
    stream_config: StreamConfig | None = None,
    battery: BatterySpec | None = None,
    charging: ChargeSchedule | None = None,
    clock: Clock | None = None,
    state_bytes: int = DEFAULT_STATE_BYTES,
    on_reboot: Callable[[], None] | None = None,
) -> SimulatedBoard:
    """A board of class ``profile`` sensing reference task ``task`` (on a fresh SimClock by default)."""
    hw = get_profile(profile) if isinstance(profile, str) else profile
    clk = clock if clock is not None else SimClock()
    return SimulatedBoard(
        hw,
        stream=make_stream(task, stream_config),
        flash=FlashArea.for_profile(hw, flash_root, state_bytes=state_bytes),
        power=PowerModel(hw, battery, charging, start_s=clk.monotonic()),
        clock=clk,
        on_reboot=on_reboot,
    )
