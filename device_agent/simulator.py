"""Many simulated devices in one process, each a real :class:`~device_agent.agent.Agent` with its own MQTT
connection (client id = device id), on simulated time.

Every device has its own :class:`~firmware_stubs.clock.SimClock`; the simulator advances the fleet in
rounds of ``step_s`` simulated seconds (each agent runs its loop up to the round's end, then the next
agent), optionally paced to ``sim_speed`` simulated seconds per wall second. What can be shared is:
the sensor pools (``firmware_stubs.sensors.task_pools`` caches them per process) and each chain
model's bytes and report (one :class:`~device_agent.model_manager.ModelArtifact` per model and
hardware class); each device has its own interpreter, disk buffer, slot store and state directory.

Scripted scenarios (issue 6) plug in through :class:`Scenario` (:mod:`device_agent.scenarios` has the
named ones): ``setup_device`` (optional) before each agent is made (battery, charger, sensor seed),
``on_start`` after every agent started, ``on_step`` after every round (inject drift on
``agent.board.stream``, stop the broker, restart a device…), ``on_finish`` with the results before they
are written (a scenario adds its own section under ``results["scenarios"]``).

A fleet registered with a server passes each device's credential (``credentials``: device id -> secret;
MQTT username = device id, the same secret authenticates OTA downloads) and the server's Ed25519 root
keys (``root_public_keys``). Every device is a :class:`device_agent.agent.Agent`, which fetches a
release's report and golden file before an update's trial health check.

Driving: :meth:`FleetSimulator.run` (start, advance to ``duration_s``, finish), or step by step with
:meth:`start`, :meth:`advance_to` and :meth:`finish` (the demo orchestrator interleaves server work with
the rounds). :meth:`now` is the fleet's simulated wall clock (epoch seconds): a server that shares the
simulation (rollout runner, drift evaluator) must use it, since windows carry simulated timestamps.

Results (``results.json``): the settings, wall and simulated time, and per device the agent's
counters (windows sent, inferences, positives, fallback switches, OTA state, battery, link, commands,
buffer) plus ``drained`` (every buffered record acknowledged by the broker before the end).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from device_agent.agent import Agent, AgentOptions, rss_kb
from device_agent.config import AgentConfig, BrokerConfig, LoopConfig
from device_agent.model_manager import ModelArtifact
from firmware_stubs.clock import DEFAULT_SIM_EPOCH_S, SimClock
from firmware_stubs.hardware_profiles import PROFILES
from firmware_stubs.power import BatterySpec, ChargeSchedule
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
    # MQTT 5 (default: the broker tells a device when nobody took a window, it re-sends) or 3.1.1
    # (brokers without MQTT 5, e.g. the demo's embedded amqtt).
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    seed: int = 0
    drain_timeout_s: float = Field(30.0, ge=0)

    @field_validator("profiles")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [p for p in v if p not in PROFILES]
        if unknown:
            raise ValueError(f"unknown hardware profile(s) {unknown}; known: {', '.join(sorted(PROFILES))}")
        return v


@dataclass
class DeviceSetup:
    """What a scenario may change about one device before its agent is made."""

    index: int
    device_id: str
    hardware_class: str
    stream: StreamConfig
    battery: BatterySpec | None = None  # None: the profile's battery
    charging: ChargeSchedule | None = None  # None: no charger
    tags: dict[str, str] = field(default_factory=dict)  # what the device is registered with (cohorts)


class Scenario(Protocol):
    """A script run alongside the fleet (issue 6). Every method may be a no-op; ``setup_device(sim,
    setup)`` is optional (looked up by name) and runs before each device's agent is made."""

    def on_start(self, sim: FleetSimulator) -> None: ...

    def on_step(self, sim: FleetSimulator, t_s: float) -> None: ...

    def on_finish(self, sim: FleetSimulator, results: dict[str, Any]) -> None: ...


Progress = Callable[[float, float], None]  # (simulated seconds done, total)


class FleetSimulator:
    def __init__(
        self,
        settings: SimulationSettings,
        *,
        scenario: Scenario | None = None,
        credentials: Mapping[str, str] | None = None,
        root_public_keys: Sequence[bytes] = (),
        server_url: str | None = None,
        agent_class: type[Agent] = Agent,
    ) -> None:
        self.settings = settings
        self.scenario = scenario
        self.credentials = dict(credentials or {})
        self.root_public_keys = list(root_public_keys)
        self.server_url = server_url
        self.agent_class = agent_class
        self.agents: list[Agent] = []
        self.setups: list[DeviceSetup] = []
        self._artifacts: dict[tuple[str, str], ModelArtifact] = {}
        self._made: dict[str, tuple[AgentConfig, AgentOptions]] = {}
        self.t_s = 0.0
        self.epoch_s = DEFAULT_SIM_EPOCH_S
        self.restarts = 0
        self._wall0: float | None = None

    def device_id(self, i: int) -> str:
        return f"{self.settings.device_prefix}-{i:04d}"

    def now(self) -> float:
        """The fleet's simulated wall clock (epoch seconds), as every device's timestamps use it."""
        return self.epoch_s + self.t_s

    def setup_for(self, i: int) -> DeviceSetup:
        """Device i's default set-up: profile ``profiles[i % len(profiles)]``, its own sensor seed."""
        s = self.settings
        return DeviceSetup(
            index=i,
            device_id=self.device_id(i),
            hardware_class=s.profiles[i % len(s.profiles)],
            stream=StreamConfig(seed=s.seed * 100_003 + i),
        )

    def build(self) -> list[Agent]:
        """Create (not start) every agent (after the scenario's ``setup_device``, if it has one)."""
        hook = getattr(self.scenario, "setup_device", None)
        for i in range(self.settings.devices):
            setup = self.setup_for(i)
            if hook is not None:
                hook(self, setup)
            self.setups.append(setup)
            self.agents.append(self._make_agent(setup))
        return self.agents

    def _make_agent(self, setup: DeviceSetup) -> Agent:
        s = self.settings
        dev = setup.device_id
        password = self.credentials.get(dev)
        config = AgentConfig(
            device_id=dev,
            hardware_class=setup.hardware_class,
            model_dir=s.chain_dir,
            state_dir=s.workdir / dev,
            server_url=self.server_url or AgentConfig.__dataclass_fields__["server_url"].default,
            fetch_revocations=self.server_url is not None,  # a fleet on a server follows its revocations
            broker=BrokerConfig(
                url=s.broker_url,
                username=dev if password else None,
                password=password,
                protocol=s.mqtt_protocol,
            ),
            loop=LoopConfig(sample_period_s=s.sample_period_s, window_s=s.window_s),
        )
        options = AgentOptions(
            clock=SimClock(self.epoch_s),
            stream_config=setup.stream,
            battery=setup.battery,
            charging=setup.charging,
            root_public_keys=list(self.root_public_keys),
            buffer_fsync=False,  # a simulated fleet survives crashes of the process, not power cuts
            mqtt_poll_s=0.1,
            reconnect_min_s=0.2,
            reconnect_max_s=5.0,
            artifact_cache=self._artifacts,
        )
        self._made[dev] = (config, options)
        return self.agent_class(config, options)

    def agent(self, device_id: str) -> Agent:
        for a in self.agents:
            if a.device_id == device_id:
                return a
        raise KeyError(device_id)

    def restart_agent(self, device_id: str) -> Agent:
        """Stop one device (its process dies: nothing drained) and start a new agent on the same state
        directory and clock, as after a reboot; the slot store, OTA record and disk buffer carry over."""
        i = next(k for k, a in enumerate(self.agents) if a.device_id == device_id)
        old = self.agents[i]
        old.stop(drain_timeout_s=0)
        config, options = self._made[device_id]
        clock = old.board.clock
        fresh = self.agent_class(config, options)
        # The new board must continue the old one's simulated time.
        if isinstance(clock, SimClock) and isinstance(fresh.board.clock, SimClock):
            fresh.board.clock.advance_to(clock.monotonic())
        fresh.start()
        self.agents[i] = fresh
        self.restarts += 1
        return fresh

    def start(self) -> None:
        if not self.agents:
            self.build()
        self._wall0 = time.monotonic()
        for agent in self.agents:
            agent.start()
        if self.scenario is not None:
            self.scenario.on_start(self)

    def advance_to(
        self, t_end: float, progress: Progress | None = None, *, total: float | None = None
    ) -> None:
        """Run rounds of ``step_s`` until simulated time ``t_end`` (paced to ``sim_speed`` if set)."""
        s = self.settings
        step = s.step_s or s.window_s
        if self._wall0 is None:
            self._wall0 = time.monotonic()
        t_start, wall_start = self.t_s, time.monotonic()
        while self.t_s < t_end:
            self.t_s = min(t_end, self.t_s + step)
            for agent in self.agents:
                agent.run_until(self.t_s)
            if self.scenario is not None:
                self.scenario.on_step(self, self.t_s)
            if s.sim_speed is not None:
                lag = wall_start + (self.t_s - t_start) / s.sim_speed - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
            if progress is not None:
                progress(self.t_s, total if total is not None else t_end)

    def finish(self) -> dict[str, Any]:
        """Close every window, wait for delivery, stop every agent; the results (after ``on_finish``)."""
        wall = time.monotonic() - (self._wall0 if self._wall0 is not None else time.monotonic())
        try:
            results = self._finish(wall)
        finally:
            for agent in self.agents:
                agent.stop(drain_timeout_s=0)
        if self.scenario is not None:
            self.scenario.on_finish(self, results)
        return results

    def stop(self) -> None:
        """Stop every agent without collecting results (error paths)."""
        for agent in self.agents:
            agent.stop(drain_timeout_s=0)

    def run(self, progress: Progress | None = None) -> dict[str, Any]:
        """Start, advance every device to ``duration_s``, stop; return the results."""
        self.start()
        try:
            self.advance_to(self.settings.duration_s, progress)
        except BaseException:
            self.stop()
            raise
        return self.finish()

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
            "restarts": self.restarts,
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
