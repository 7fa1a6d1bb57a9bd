"""Many simulated devices in one process, each a real :class:`~device_agent.agent.Agent` with its own MQTT
connection (client id = device id), on simulated time.

Every device has its own :class:`~firmware_stubs.clock.SimClock`; the simulator advances the fleet in
rounds of ``step_s`` simulated seconds (each agent runs its loop up to the round's end, then the next
agent), optionally paced to ``sim_speed`` simulated seconds per wall second. What can be shared is:
the sensor pools (``firmware_stubs.sensors.task_pools`` caches them per process) and each chain
model's bytes and report (one :class:`~device_agent.model_manager.ModelArtifact` per model and
hardware class); each device has its own interpreter, disk buffer, slot store and state directory.

Scripted scenarios (issue 6) plug in through :class:`Scenario`: ``on_start`` after every agent started,
``on_step`` after every round (inject drift on ``agent.board.stream``, send commands, stop the broker…),
``on_finish`` with the results before they are written.

Results (``results.json``): the settings, wall and simulated time, and per device the agent's
counters (windows sent, inferences, positives, fallback switches, OTA state, battery, link, commands,
buffer) plus ``drained`` (every buffered record acknowledged by the broker before the end).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from device_agent.agent import Agent, AgentOptions, rss_kb
from device_agent.config import AgentConfig, BrokerConfig, LoopConfig
from device_agent.model_manager import ModelArtifact
from firmware_stubs.clock import SimClock
from firmware_stubs.hardware_profiles import PROFILES
from firmware_stubs.sensor_streams import StreamConfig

log = logging.getLogger(__name__)

RESULTS_VERSION = 1


class SimulationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: int = Field(ge=1, le=2000)
    profiles: list[str] = Field(default_factory=lambda: ["pi-zero-2w"], min_length=1)
    broker_url: str = "mqtt://127.0.0.1:1883"
    chain_dir: Path
    workdir: Path
    duration_s: float = Field(gt=0, le=365 * 86_400, description="simulated seconds")
    sim_speed: float | None = Field(None, gt=0, description="None: as fast as the host allows")
    step_s: float | None = Field(None, gt=0, description="simulated seconds per round; None: window_s")
    sample_period_s: float = Field(1.0, gt=0)
    window_s: float = Field(60.0, gt=0, le=65_535)
    device_prefix: str = Field("sim", pattern=r"^[A-Za-z0-9_-]{1,32}$")
    seed: int = 0
    drain_timeout_s: float = Field(30.0, ge=0)

    @field_validator("profiles")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [p for p in v if p not in PROFILES]
        if unknown:
            raise ValueError(f"unknown hardware profile(s) {unknown}; known: {', '.join(sorted(PROFILES))}")
        return v


class Scenario(Protocol):
    """A script run alongside the fleet (issue 6). Every method may be a no-op."""

    def on_start(self, sim: FleetSimulator) -> None: ...

    def on_step(self, sim: FleetSimulator, t_s: float) -> None: ...

    def on_finish(self, sim: FleetSimulator, results: dict[str, Any]) -> None: ...


Progress = Callable[[float, float], None]  # (simulated seconds done, total)


class FleetSimulator:
    def __init__(self, settings: SimulationSettings, *, scenario: Scenario | None = None) -> None:
        self.settings = settings
        self.scenario = scenario
        self.agents: list[Agent] = []
        self._artifacts: dict[tuple[str, str], ModelArtifact] = {}
        self.t_s = 0.0

    def device_id(self, i: int) -> str:
        return f"{self.settings.device_prefix}-{i:04d}"

    def build(self) -> list[Agent]:
        """Create (not start) every agent; device i runs profile ``profiles[i % len(profiles)]``."""
        s = self.settings
        for i in range(s.devices):
            dev = self.device_id(i)
            config = AgentConfig(
                device_id=dev,
                hardware_class=s.profiles[i % len(s.profiles)],
                model_dir=s.chain_dir,
                state_dir=s.workdir / dev,
                broker=BrokerConfig(url=s.broker_url),
                loop=LoopConfig(sample_period_s=s.sample_period_s, window_s=s.window_s),
            )
            options = AgentOptions(
                clock=SimClock(),
                stream_config=StreamConfig(seed=s.seed * 100_003 + i),
                buffer_fsync=False,  # a simulated fleet survives crashes of the process, not power cuts
                mqtt_poll_s=0.1,
                reconnect_min_s=0.2,
                reconnect_max_s=5.0,
                artifact_cache=self._artifacts,
            )
            self.agents.append(Agent(config, options))
        return self.agents

    def start(self) -> None:
        if not self.agents:
            self.build()
        for agent in self.agents:
            agent.start()
        if self.scenario is not None:
            self.scenario.on_start(self)

    def run(self, progress: Progress | None = None) -> dict[str, Any]:
        """Start, advance every device to ``duration_s``, stop; return the results."""
        s = self.settings
        step = s.step_s or s.window_s
        wall0 = time.monotonic()
        self.start()
        try:
            while self.t_s < s.duration_s:
                self.t_s = min(s.duration_s, self.t_s + step)
                for agent in self.agents:
                    agent.run_until(self.t_s)
                if self.scenario is not None:
                    self.scenario.on_step(self, self.t_s)
                if s.sim_speed is not None:
                    lag = wall0 + self.t_s / s.sim_speed - time.monotonic()
                    if lag > 0:
                        time.sleep(lag)
                if progress is not None:
                    progress(self.t_s, s.duration_s)
            results = self._finish(time.monotonic() - wall0)
        finally:
            for agent in self.agents:
                agent.stop(drain_timeout_s=0)
        if self.scenario is not None:
            self.scenario.on_finish(self, results)
        return results

    def _finish(self, run_wall_s: float) -> dict[str, Any]:
        # Close every open window first, then give all links together time to deliver.
        for agent in self.agents:
            agent.loop.close_window()
        deadline = time.monotonic() + self.settings.drain_timeout_s
        drained = {
            a.device_id: a.link.wait_drained(max(0.0, deadline - time.monotonic())) for a in self.agents
        }
        devices = []
        for agent in self.agents:
            summary = agent.summary()
            summary["drained"] = drained[agent.device_id]
            devices.append(summary)
        return {
            "results_version": RESULTS_VERSION,
            "settings": self.settings.model_dump(mode="json"),
            "wall_s": round(run_wall_s, 3),
            "sim_s": self.t_s,
            "process_rss_kb": rss_kb(),  # the whole fleet process, links still connected
            "devices": devices,
            "totals": _totals(devices),
        }


def _totals(devices: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("windows_sent", "inferences", "positives", "fallback_switches", "invoke_failures")
    totals: dict[str, Any] = {k: sum(int(d[k]) for d in devices) for k in keys}
    totals["devices"] = len(devices)
    totals["drained"] = sum(bool(d["drained"]) for d in devices)
    totals["commands_rejected"] = sum(int(d["commands"]["malformed"]) for d in devices)
    return totals


def write_results(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)
