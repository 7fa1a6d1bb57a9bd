"""Energy-aware updates: whether the device may spend energy downloading an update now.

A download (radio on for seconds to minutes) is deferred while the battery is below
``min_battery_pct`` and not charging. Hysteresis: once deferred, downloads resume only at
``min_battery_pct + margin_pct`` or when charging, so a battery hovering at the threshold does not
start and abort a download every window. The decision carries its reason for the status message.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_agent.sections import Section, bounded


@dataclass(frozen=True, kw_only=True)
class EnergyThresholds(Section):  # a validated dataclass: the agent's config path is pydantic-free
    min_battery_pct: float = bounded(30.0, ge=0, le=100)
    margin_pct: float = bounded(5.0, ge=0, le=100)


@dataclass(frozen=True)
class UpdateGate:
    allowed: bool
    reason: str  # human-readable, goes into the status / OTA status message


class UpdateEnergyPolicy:
    def __init__(self, thresholds: EnergyThresholds | None = None) -> None:
        self.t = thresholds if thresholds is not None else EnergyThresholds()
        self._deferring = False

    @property
    def deferring(self) -> bool:
        return self._deferring

    def decide(self, battery_pct: float | None, charging: bool) -> UpdateGate:
        """Gate for a download starting (or continuing) now."""
        if battery_pct is None:
            self._deferring = False
            return UpdateGate(True, "mains powered (no battery gauge)")
        if charging:
            self._deferring = False
            return UpdateGate(True, f"charging (battery {battery_pct:.1f} %)")
        resume_at = self.t.min_battery_pct + self.t.margin_pct
        limit = resume_at if self._deferring else self.t.min_battery_pct
        if battery_pct < limit:
            self._deferring = True
            return UpdateGate(
                False,
                f"update deferred: battery {battery_pct:.1f} % < {limit:.1f} % and not "
                f"charging (resumes at {resume_at:.1f} % or on charge)",
            )
        self._deferring = False
        return UpdateGate(True, f"battery {battery_pct:.1f} % >= {limit:.1f} %")
