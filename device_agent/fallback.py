"""When to step down or back up the fallback chain. A plain domain object: no I/O, no clock, no models.

Levels run 0 (primary) .. n-1 (cheapest). The policy *proposes* a :class:`FallbackEvent`; the caller
activates the target model and then :meth:`FallbackPolicy.commit` s the event (or reports the load
failure with :meth:`FallbackPolicy.mark_unusable` and asks :meth:`FallbackPolicy.next_usable_below`).
That keeps the policy's level equal to the model that really runs.

Step down (one level per decision):

- load failure or "memory too small" at a level: that level is unusable until :meth:`reset`;
- ``max_consecutive_errors`` invoke failures in a row;
- latency p95 over ``max_latency_us`` for ``latency_windows`` consecutive windows;
- battery below ``min_battery_pct`` and not charging (one level per such window);
- false-positive rate (feedback-marked false / positives) over ``max_false_positive_rate`` for
  ``fp_windows`` consecutive windows that had at least ``min_positives`` positives.

Step back up (hysteresis): after ``recover_windows`` consecutive *clear* windows — no condition
active, and the battery at least ``battery_margin_pct`` above its threshold or charging — one level
up to the nearest usable level, never above the *ceiling*: the level the policy started from or was
told to run (:meth:`FallbackPolicy.follow`, e.g. after an operator's revert). A level left for
latency, false positives or invoke errors needs
``recover_windows x 2^k`` clear windows (k = times it was left so, capped by ``max_backoff_factor``),
so a model that keeps failing is retried less and less often instead of flapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from device_agent.sections import Section, bounded

if TYPE_CHECKING:
    from telemetry.device_codec import FallbackSwitched, ModelRef


class SwitchReason(StrEnum):
    LOAD_FAILED = "load_failed"
    MEMORY = "memory"
    INVOKE_FAILED = "invoke_failed"
    LATENCY = "latency"
    BATTERY = "battery"
    FALSE_POSITIVES = "false_positives"
    HEALTH_CHECK = "health_check"
    RECOVERED = "recovered"
    MANUAL = "manual"


# Telemetry schema 1.1 carries every switch reason as itself (telemetry.wire.FALLBACK_REASONS); a test
# checks each SwitchReason is a wire reason.
TELEMETRY_REASON: dict[SwitchReason, str] = {r: r.value for r in SwitchReason}
_BACKOFF_REASONS = frozenset({SwitchReason.LATENCY, SwitchReason.FALSE_POSITIVES, SwitchReason.INVOKE_FAILED})


@dataclass(frozen=True, kw_only=True)
class FallbackThresholds(Section):
    """The knobs (device.toml ``[fallback]``); None switches a condition off."""

    max_latency_us: int | None = bounded(None, gt=0)  # on-device p95 per window
    latency_windows: int = bounded(3, ge=1)
    max_consecutive_errors: int = bounded(3, ge=1)
    min_battery_pct: float | None = bounded(20.0, ge=0, le=100)
    battery_margin_pct: float = bounded(5.0, ge=0, le=100)
    max_false_positive_rate: float | None = bounded(None, gt=0, le=1)
    min_positives: int = bounded(5, ge=1)  # a window with fewer positives says nothing about FP rate
    fp_windows: int = bounded(2, ge=1)
    recover_windows: int = bounded(3, ge=1)
    max_backoff_factor: int = bounded(8, ge=1)


@dataclass(frozen=True)
class WindowObservation:
    """What a closed metrics window tells the policy."""

    inferences: int
    latency_p95_us: int
    positives: int
    false_positives: int
    battery_pct: float | None
    charging: bool


@dataclass(frozen=True)
class FallbackEvent:
    from_level: int
    to_level: int
    reason: SwitchReason
    detail: str

    @property
    def is_step_down(self) -> bool:
        return self.to_level > self.from_level

    def to_telemetry(self, device_id: str, ts: int, model: ModelRef | None = None) -> FallbackSwitched:
        """The switch as a ``telemetry.device_codec.FallbackSwitched`` record (pydantic-free; a pydantic
        ``telemetry.schemas.ModelRef`` is accepted for ``model`` too)."""
        from telemetry.device_codec import FallbackSwitched
        from telemetry.device_codec import ModelRef as ModelRecord

        if model is not None and not isinstance(model, ModelRecord):
            model = ModelRecord(name=model.name, version=model.version, variant=model.variant)
        return FallbackSwitched(
            device_id=device_id,
            ts=ts,
            from_level=self.from_level,
            to_level=self.to_level,
            reason=TELEMETRY_REASON[self.reason],
            detail=self.detail[:256] or None,
            model=model,
        )


class FallbackPolicy:
    def __init__(self, levels: int, thresholds: FallbackThresholds | None = None, *, level: int = 0) -> None:
        if levels < 1:
            raise ValueError(f"a chain has at least one level, got {levels}")
        if not 0 <= level < levels:
            raise ValueError(f"level {level} outside 0..{levels - 1}")
        self.levels = levels
        self.t = thresholds if thresholds is not None else FallbackThresholds()
        self.level = level
        self.ceiling = 0  # best level the policy may climb back to by itself
        self.unusable: dict[int, str] = {}
        self._backoff: dict[int, int] = {}  # level -> times left for a backoff reason
        self._errors = 0
        self._slow = 0
        self._fp = 0
        self._clear = 0

    # -- queries ---------------------------------------------------------------------------------

    def usable(self, level: int) -> bool:
        return 0 <= level < self.levels and level not in self.unusable

    def next_usable_below(self, level: int) -> int | None:
        """The nearest usable level cheaper than ``level`` (higher index), or None at the bottom."""
        return next((lv for lv in range(level + 1, self.levels) if self.usable(lv)), None)

    def next_usable_above(self, level: int) -> int | None:
        """The nearest usable level better than ``level``, not above the ceiling, or None."""
        return next((lv for lv in range(level - 1, self.ceiling - 1, -1) if self.usable(lv)), None)

    def windows_to_recover_into(self, level: int) -> int:
        factor = min(2 ** self._backoff.get(level, 0), self.t.max_backoff_factor)
        return self.t.recover_windows * factor

    # -- state changes -----------------------------------------------------------------------------

    def commit(self, event: FallbackEvent) -> None:
        """The caller now runs ``event.to_level``."""
        if not self.usable(event.to_level):
            raise ValueError(
                f"cannot switch to unusable level {event.to_level}: {self.unusable.get(event.to_level)}"
            )
        if event.reason in _BACKOFF_REASONS and event.is_step_down:
            self._backoff[event.from_level] = self._backoff.get(event.from_level, 0) + 1
        self.level = event.to_level
        self._errors = self._slow = self._fp = self._clear = 0

    def follow(self, level: int) -> None:
        """The caller switched by itself (start-up, update, manual revert): go on from ``level``, which
        also becomes the ceiling (the policy does not climb above a level chosen for it), keeping what
        is known to be unusable."""
        if not 0 <= level < self.levels:
            raise ValueError(f"level {level} outside 0..{self.levels - 1}")
        self.level = level
        self.ceiling = level
        self._errors = self._slow = self._fp = self._clear = 0

    def replace_level(self, level: int) -> None:
        """A different model now sits at ``level`` (an installed release becomes level 0): forget what was
        known about the old one there and go on from it (also the new ceiling)."""
        self.unusable.pop(level, None)
        self._backoff.pop(level, None)
        self.follow(level)

    def reset(self, level: int = 0) -> None:
        """A new chain (e.g. after an update): forget unusable levels and backoff."""
        if not 0 <= level < self.levels:
            raise ValueError(f"level {level} outside 0..{self.levels - 1}")
        self.unusable.clear()
        self._backoff.clear()
        self.level = level
        self.ceiling = 0
        self._errors = self._slow = self._fp = self._clear = 0

    def _down(self, reason: SwitchReason, detail: str) -> FallbackEvent | None:
        target = self.next_usable_below(self.level)
        return None if target is None else FallbackEvent(self.level, target, reason, detail)

    def mark_unusable(self, level: int, reason: SwitchReason, detail: str) -> FallbackEvent | None:
        """``level`` failed to load (``LOAD_FAILED``) or does not fit (``MEMORY``).

        Returns a step-down proposal when ``level`` is the one running now, else None.
        """
        if not 0 <= level < self.levels:
            raise ValueError(f"level {level} outside 0..{self.levels - 1}")
        self.unusable[level] = f"{reason.value}: {detail}"
        return self._down(reason, detail) if level == self.level else None

    def on_invoke_failure(self, detail: str) -> FallbackEvent | None:
        self._errors += 1
        if self._errors >= self.t.max_consecutive_errors:
            return self._down(
                SwitchReason.INVOKE_FAILED, f"{self._errors} consecutive invoke failures: {detail}"
            )
        return None

    def on_invoke_success(self) -> None:
        self._errors = 0

    def observe_window(self, obs: WindowObservation) -> FallbackEvent | None:
        t = self.t
        battery_low = battery_clear = True
        if t.min_battery_pct is None or obs.battery_pct is None or obs.charging:
            battery_low = False
        else:
            battery_low = obs.battery_pct < t.min_battery_pct
            battery_clear = obs.battery_pct >= t.min_battery_pct + t.battery_margin_pct
        slow = t.max_latency_us is not None and obs.inferences > 0 and obs.latency_p95_us > t.max_latency_us
        self._slow = self._slow + 1 if slow else 0
        fp_rate = obs.false_positives / obs.positives if obs.positives else 0.0
        noisy = (
            t.max_false_positive_rate is not None
            and obs.positives >= t.min_positives
            and fp_rate > t.max_false_positive_rate
        )
        self._fp = self._fp + 1 if noisy else 0

        if battery_low:
            self._clear = 0
            return self._down(
                SwitchReason.BATTERY,
                f"battery {obs.battery_pct:.1f} % < {t.min_battery_pct} % and not charging",
            )
        if self._slow >= t.latency_windows:
            self._clear = 0
            return self._down(
                SwitchReason.LATENCY,
                f"p95 {obs.latency_p95_us} us > {t.max_latency_us} us for {self._slow} windows",
            )
        if self._fp >= t.fp_windows:
            self._clear = 0
            return self._down(
                SwitchReason.FALSE_POSITIVES,
                f"false-positive rate {fp_rate:.2f} > {t.max_false_positive_rate} for {self._fp} windows",
            )
        if slow or noisy or not battery_clear:
            self._clear = 0  # a condition is building up or the battery is inside the hysteresis band
            return None
        self._clear += 1
        target = self.next_usable_above(self.level)
        if target is not None and self._clear >= self.windows_to_recover_into(target):
            return FallbackEvent(self.level, target, SwitchReason.RECOVERED, f"{self._clear} clear windows")
        return None
