"""Named fleet scenarios for the simulator (issue 6): drift, low battery, broker outage, device churn,
and a device-side "bad model" cohort. Each is a :class:`device_agent.simulator.Scenario`.

A scenario picks its cohort deterministically (every device whose index falls in the chosen share,
spread over the fleet by a stride so every hardware profile is hit), changes only the simulated world
(sensor stream, battery, charger, broker, process restarts; never the agent's logic) and reports what
it did under ``results["scenarios"][<name>]``: the cohort, when, and the outcome figures a test or a
benchmark reads (e.g. fallback switches per cohort device, windows delivered across an outage).

The server-side "bad release" (a worse model rolled out and stopped by the gates) is the demo's
(fleet_server/demo); the ``bad-model`` scenario here is its device-side stand-in for
``tinyfleet simulate``: from ``start_s`` the cohort decides with a lower detection threshold, so it
reports more false wakes than the rest (compare the cohorts' FP rates in the results).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from firmware_stubs.power import BatterySpec, PluggedIn
from firmware_stubs.sensor_streams import DriftSpec

if TYPE_CHECKING:
    from device_agent.simulator import DeviceSetup, FleetSimulator

log = logging.getLogger(__name__)


def cohort_indices(devices: int, fraction: float, *, offset: int = 0) -> list[int]:
    """About ``fraction`` of ``devices`` (at least one when fraction > 0), spread evenly over the fleet.

    Devices get profiles round-robin, so an even spread covers every profile. ``offset`` shifts the
    picks so two scenarios can choose disjoint cohorts."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within 0..1, got {fraction!r}")
    n = round(devices * fraction)
    if fraction > 0:
        n = max(1, n)
    if n == 0:
        return []
    stride = devices / n
    return sorted({(int(k * stride) + offset) % devices for k in range(n)})


def _record(results: dict[str, Any], name: str, section: dict[str, Any]) -> None:
    results.setdefault("scenarios", {})[name] = section


class _Base:
    name = "scenario"

    def on_start(self, sim: FleetSimulator) -> None:
        return None

    def on_step(self, sim: FleetSimulator, t_s: float) -> None:
        return None

    def on_finish(self, sim: FleetSimulator, results: dict[str, Any]) -> None:
        return None


@dataclass
class DriftScenario(_Base):
    """From ``start_s`` the cohort's sensors see a changed environment: the task's drifted pool where
    it has one (KWS: the same recording at a louder noise floor), else a shift in feature space."""

    fraction: float = 0.3
    start_s: float = 0.0
    shift: float = 0.25  # feature-space shift, for tasks without a drifted pool
    offset: int = 0
    hardware_class: str | None = None  # given: the cohort is every device of this class instead
    name: str = "drift"
    cohort: list[str] = field(default_factory=list)

    def on_start(self, sim: FleetSimulator) -> None:
        if self.hardware_class is not None:
            picks = [i for i, a in enumerate(sim.agents) if a.profile.name == self.hardware_class]
        else:
            picks = cohort_indices(len(sim.agents), self.fraction, offset=self.offset)
        self.cohort = [sim.agents[i].device_id for i in picks]
        for i in picks:
            self.inject(sim.agents[i], self.start_s)

    def inject(self, agent: Any, start_s: float) -> None:
        stream = agent.board.stream
        if stream.pools.drifted is not None:
            stream.inject_drift(DriftSpec(start_s=start_s, use_drifted_pool=True))
        else:
            stream.inject_drift(DriftSpec(start_s=start_s, shift=self.shift))

    def on_finish(self, sim: FleetSimulator, results: dict[str, Any]) -> None:
        _record(results, self.name, {"cohort": self.cohort, "start_s": self.start_s})


@dataclass
class LowBatteryScenario(_Base):
    """At ``start_s`` the cohort's batteries are found almost empty (``start_percent``, no charger: the
    board gets a fresh power model, as if a nearly flat battery were swapped in); ``charge_after_s``
    later they are plugged in (``charge_ma``). The agents should fall back to cheaper models (the
    fallback policy's battery rule) and step back up once charging."""

    fraction: float = 0.2
    start_s: float = 0.0
    start_percent: float = 12.0
    charge_after_s: float = 900.0
    charge_ma: float = 2000.0
    offset: int = 1
    name: str = "low-battery"
    cohort: list[str] = field(default_factory=list)
    applied_at: float | None = None

    def on_start(self, sim: FleetSimulator) -> None:
        picks = cohort_indices(len(sim.agents), self.fraction, offset=self.offset)
        self.cohort = [sim.agents[i].device_id for i in picks]
        self.on_step(sim, sim.t_s)

    def on_step(self, sim: FleetSimulator, t_s: float) -> None:
        if self.applied_at is not None or t_s < self.start_s:
            return
        from firmware_stubs.power import PowerModel

        for dev in self.cohort:
            board = sim.agent(dev).board
            now = board.clock.monotonic()
            profile = board.profile
            board.power = PowerModel(
                profile,
                BatterySpec(capacity_mah=profile.battery_mah, initial_percent=self.start_percent),
                PluggedIn(charge_ma=self.charge_ma, from_s=self.charge_after_s),  # relative to start_s
                start_s=now,
            )
        self.applied_at = t_s

    def on_finish(self, sim: FleetSimulator, results: dict[str, Any]) -> None:
        by_id = {d["device_id"]: d for d in results.get("devices", [])}
        devices = {
            dev: {
                "fallback_switches": by_id[dev]["fallback_switches"],
                "fallback_level": by_id[dev]["fallback_level"],
                "battery_pct": by_id[dev]["battery_pct"],
                "charging": by_id[dev]["charging"],
            }
            for dev in self.cohort
            if dev in by_id
        }
        _record(
            results,
            self.name,
            {
                "cohort": self.cohort,
                "start_s": self.start_s,
                "applied_at_s": self.applied_at,
                "start_percent": self.start_percent,
                "charge_after_s": self.charge_after_s,
                "devices": devices,
                # A device that fell back and came back up switched at least twice and ends on level 0.
                "recovered": sum(
                    1 for d in devices.values() if d["fallback_switches"] >= 2 and d["fallback_level"] == 0
                ),
            },
        )


class BrokerControl(Protocol):
    def stop(self) -> None: ...

    def start(self) -> None: ...


@dataclass
class BrokerOutageScenario(_Base):
    """The broker is down from ``start_s`` for ``duration_s`` simulated seconds; devices keep sensing
    and buffer on disk, then replay. Needs a broker the caller controls (``broker``)."""

    broker: BrokerControl | None = None
    start_s: float = 600.0
    duration_s: float = 600.0
    name: str = "broker-outage"
    stopped_at: float | None = None
    restarted_at: float | None = None
    buffered_peak: int = 0

    def on_step(self, sim: FleetSimulator, t_s: float) -> None:
        if self.broker is None:
            return
        if self.stopped_at is None and t_s >= self.start_s:
            log.info("broker outage: stopping the broker at %.0f s", t_s)
            self.broker.stop()
            self.stopped_at = t_s
        elif self.stopped_at is not None and self.restarted_at is None:
            pending = sum(a.buffer.stats().pending for a in sim.agents)
            self.buffered_peak = max(self.buffered_peak, pending)
            if t_s >= self.start_s + self.duration_s:
                log.info("broker outage: restarting the broker at %.0f s", t_s)
                self.broker.start()
                self.restarted_at = t_s

    def on_finish(self, sim: FleetSimulator, results: dict[str, Any]) -> None:
        _record(
            results,
            self.name,
            {
                "controlled": self.broker is not None,
                "stopped_at_s": self.stopped_at,
                "restarted_at_s": self.restarted_at,
                "buffered_peak": self.buffered_peak,
                "drained": results.get("totals", {}).get("drained"),
            },
        )


@dataclass
class DeviceChurnScenario(_Base):
    """Every ``every_s`` one cohort device's process dies and restarts on its state directory (reboot,
    crash): the slot store, OTA record, window sequence and disk buffer must carry over."""

    fraction: float = 0.2
    every_s: float = 600.0
    offset: int = 2
    name: str = "device-churn"
    cohort: list[str] = field(default_factory=list)
    restarts: list[tuple[float, str]] = field(default_factory=list)
    _next_s: float = 0.0
    _k: int = 0

    def on_start(self, sim: FleetSimulator) -> None:
        picks = cohort_indices(len(sim.agents), self.fraction, offset=self.offset)
        self.cohort = [sim.agents[i].device_id for i in picks]
        self._next_s = self.every_s

    def on_step(self, sim: FleetSimulator, t_s: float) -> None:
        if not self.cohort:
            return
        while t_s >= self._next_s:
            dev = self.cohort[self._k % len(self.cohort)]
            self._k += 1
            self._next_s += self.every_s
            sim.restart_agent(dev)
            self.restarts.append((t_s, dev))

    def on_finish(self, sim: FleetSimulator, results: dict[str, Any]) -> None:
        _record(results, self.name, {"cohort": self.cohort, "restarts": [[t, d] for t, d in self.restarts]})


@dataclass
class BadModelScenario(_Base):
    """Device-side stand-in for a bad release: from ``start_s`` the cohort decides with detection
    threshold ``threshold`` (lower = more false wakes). The results give each cohort's FP rate."""

    fraction: float = 0.2
    start_s: float = 0.0
    threshold: float = 0.5
    offset: int = 3
    name: str = "bad-model"
    cohort: list[str] = field(default_factory=list)
    _applied: bool = False

    def on_start(self, sim: FleetSimulator) -> None:
        self.cohort = [
            sim.agents[i].device_id
            for i in cohort_indices(len(sim.agents), self.fraction, offset=self.offset)
        ]
        self.on_step(sim, sim.t_s)

    def on_step(self, sim: FleetSimulator, t_s: float) -> None:
        if self._applied or t_s < self.start_s:
            return
        for dev in self.cohort:
            loop = sim.agent(dev).loop
            loop.rule = loop.rule.model_copy(update={"score_threshold": self.threshold})
        self._applied = True

    def on_finish(self, sim: FleetSimulator, results: dict[str, Any]) -> None:
        cohort = set(self.cohort)

        def rate(devs: list[dict[str, Any]]) -> dict[str, Any]:
            inf = sum(d["inferences"] for d in devs)
            fp = sum(d["false_positive_reports"] for d in devs)
            return {"devices": len(devs), "inferences": inf, "false_positives": fp,
                    "fp_per_inference": fp / inf if inf else None}  # fmt: skip

        devices = results.get("devices", [])
        _record(
            results,
            self.name,
            {
                "cohort": self.cohort,
                "threshold": self.threshold,
                "start_s": self.start_s,
                "cohort_rate": rate([d for d in devices if d["device_id"] in cohort]),
                "rest_rate": rate([d for d in devices if d["device_id"] not in cohort]),
            },
        )


@dataclass
class Composite(_Base):
    """Several scenarios at once, in order."""

    parts: Sequence[Any] = ()
    name: str = "composite"

    def setup_device(self, sim: FleetSimulator, setup: DeviceSetup) -> None:
        for p in self.parts:
            hook = getattr(p, "setup_device", None)
            if hook is not None:
                hook(sim, setup)

    def on_start(self, sim: FleetSimulator) -> None:
        for p in self.parts:
            p.on_start(sim)

    def on_step(self, sim: FleetSimulator, t_s: float) -> None:
        for p in self.parts:
            p.on_step(sim, t_s)

    def on_finish(self, sim: FleetSimulator, results: dict[str, Any]) -> None:
        for p in self.parts:
            p.on_finish(sim, results)


ScenarioFactory = Callable[..., Any]

# name -> factory(duration_s, broker) -> scenario, with timings relative to the run's length.
SCENARIOS: dict[str, ScenarioFactory] = {
    "bad-model": lambda duration_s, broker=None: BadModelScenario(start_s=duration_s * 0.25),
    "drift": lambda duration_s, broker=None: DriftScenario(start_s=duration_s * 0.5),
    "low-battery": lambda duration_s, broker=None: LowBatteryScenario(
        start_s=duration_s * 0.25, charge_after_s=duration_s * 0.35
    ),
    "broker-outage": lambda duration_s, broker=None: BrokerOutageScenario(
        broker=broker, start_s=duration_s * 0.3, duration_s=duration_s * 0.3
    ),
    "device-churn": lambda duration_s, broker=None: DeviceChurnScenario(every_s=max(60.0, duration_s / 10)),
}


def make_scenarios(names: Sequence[str], duration_s: float, broker: BrokerControl | None = None) -> Composite:
    """The named scenarios (see :data:`SCENARIOS`) as one; raises ValueError naming an unknown one."""
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(sorted(SCENARIOS))}")
    return Composite(parts=[SCENARIOS[n](duration_s, broker) for n in dict.fromkeys(names)])
