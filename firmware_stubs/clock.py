"""Clocks a board offers: simulated time the simulation advances explicitly, or the real one.

Two readings, as on real hardware: ``monotonic()`` (seconds, never goes back; schedules and the power
model run on it) and ``now()`` (wall-clock epoch seconds, for timestamps in telemetry).
"""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable

# 2026-01-01T00:00:00Z: a fixed, readable epoch so simulated timestamps are deterministic.
DEFAULT_SIM_EPOCH_S = 1_767_225_600.0


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, epoch seconds (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds since an arbitrary origin; never decreases."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass (a simulated clock jumps; a real one blocks)."""
        ...


def _check_duration(seconds: float, what: str) -> float:
    value = float(seconds)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {seconds!r}")
    return value


class SimClock:
    """Simulated time: starts at monotonic 0 and moves only when the simulation advances it.

    ``sleep`` returns at once after advancing, so an hour of a duty-cycled device simulates in
    milliseconds. Single-threaded by design: one simulation loop owns the clock.
    """

    def __init__(self, epoch_s: float = DEFAULT_SIM_EPOCH_S) -> None:
        if not math.isfinite(epoch_s) or epoch_s < 0:
            raise ValueError(f"epoch_s must be a finite epoch time >= 0, got {epoch_s!r}")
        self._epoch_s = float(epoch_s)
        self._t = 0.0

    def now(self) -> float:
        return self._epoch_s + self._t

    def monotonic(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        self._t += _check_duration(seconds, "advance")

    def advance_to(self, t_s: float) -> None:
        """Jump to monotonic time ``t_s`` (not before the current time)."""
        target = float(t_s)
        if not math.isfinite(target) or target < self._t:
            raise ValueError(f"cannot move the clock back from {self._t} s to {t_s!r} s")
        self._t = target

    def sleep(self, seconds: float) -> None:
        self.advance(_check_duration(seconds, "sleep"))


class RealClock:
    """The host's clocks, for an agent running in real time (a real board or a live demo)."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(_check_duration(seconds, "sleep"))
