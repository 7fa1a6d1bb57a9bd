"""The device agent: one object wiring board, slot store, models, inference loop, MQTT and OTA together.

Threads: the *agent thread* (whoever calls :meth:`Agent.step` / :meth:`Agent.run_until`) owns the board,
the inference loop, the model manager's swaps, the slot store and the OTA client. The MQTT link thread
only decodes commands (:class:`~device_agent.commands.CommandIntake`) and hands each to a queue; the
agent thread runs them between two wakes. So a command never races a sample: an update, a revert or a
shadow switch takes effect on the next sample, which is the hot-swap contract of
:mod:`device_agent.model_manager`. The status the link publishes is built from a snapshot the agent
thread refreshes (battery, counters), never by touching the board from the link thread.

Start-up (:meth:`Agent.start`): the slot store is provisioned from the chain's first model that fits this
hardware class if it is empty; the OTA client resumes (it boots the slot store: trial boot counting and
automatic revert, then finishes whatever update a power cut interrupted); the inference loop loads the
chain; if the booted slot holds a model that is not the chain's primary (an installed release), that
model is swapped in. Then the MQTT link starts; a broker that is down only means windows wait in the
disk buffer.

Models outside the chain (OTA releases) need their converter companions (``report.json`` with the
variant's sha256, and ``golden.npz``) on the device: they are looked up by the artifact's sha256 in the
chain's artifact directories and in ``state_dir/releases/*/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from device_agent.commands import CommandIntake
from device_agent.companions import RELEASES_DIR, fetch_companions
from device_agent.config import AgentConfig
from device_agent.disk_buffer import BufferSettings, DiskBuffer
from device_agent.energy_policy import UpdateEnergyPolicy
from device_agent.fallback import FallbackPolicy
from device_agent.inference_loop import InferenceLoop, StepResult, model_record
from device_agent.model_manager import (
    REPORT_FILE,
    ModelArtifact,
    ModelChain,
    ModelManager,
    numeric_version,
    read_report,
)
from device_agent.mqtt_link import MqttLink, MqttSettings, TlsSettings
from device_agent.publisher import TelemetryPublisher
from device_agent.runtime.base import ModelLoadError
from firmware_stubs.board import Board, BrownoutError, make_simulated_board
from firmware_stubs.clock import Clock, SimClock
from firmware_stubs.power import BatterySpec, ChargeSchedule
from firmware_stubs.sensor_streams import StreamConfig
from ota.slots import SlotStore
from telemetry.device_codec import ErrorEvent, Status

log = logging.getLogger(__name__)

AGENT_VERSION = "0.1.0"
STATE_FILE = "agent-state.json"


class AgentError(RuntimeError):
    """The agent cannot start (no model loads, the slot store cannot be provisioned); the message says why."""


class PacedClock(SimClock):
    """Simulated time that keeps pace with the wall clock at ``speed`` x, for a live agent process.

    ``sleep`` advances simulated time at once and then waits ``seconds / speed`` of wall time on
    ``stop``, so SIGTERM ends a sleep immediately. Timestamps start at the host's current time.
    A board with a real RTC would use :class:`firmware_stubs.clock.RealClock` instead.
    """

    def __init__(self, speed: float = 1.0, stop: threading.Event | None = None) -> None:
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a finite number > 0, got {speed!r}")
        super().__init__(epoch_s=time.time())
        self.speed = speed
        self.stop_event = stop if stop is not None else threading.Event()

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if seconds > 0:
            self.stop_event.wait(seconds / self.speed)


@dataclass
class AgentOptions:
    """What a deployment decides beyond ``device.toml``: the board, the clock, trust roots, tuning."""

    board: Board | None = None  # a real board plugs in here; None: a simulated one (profile + chain task)
    clock: Clock | None = None  # for the simulated board; None: PacedClock(1.0)
    stream_config: StreamConfig | None = None  # simulated sensor; None: seeded from the device id
    battery: BatterySpec | None = None
    charging: ChargeSchedule | None = None
    root_public_keys: list[bytes] = field(default_factory=list)  # Ed25519 roots; none: every update fails
    # The fleet server's trust document (/api/v1/device/trust): its root-signed revocation list is fetched
    # before every update. None: the device knows only the revocation list it already persisted.
    trust_url: str | None = None
    download_token: str | None = None  # bearer token for artifact downloads; None: Basic device id + secret
    buffer_fsync: bool = True  # False for simulated fleets (crash-safe, not power-loss safe)
    mqtt_poll_s: float = 0.05
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    # Shared across agents of one process (the simulator): one copy of each model's bytes and report.
    artifact_cache: dict[tuple[str, str], ModelArtifact] | None = None


@dataclass
class AgentCounters:
    steps: int = 0
    commands_run: int = 0
    command_errors: int = 0
    step_errors: int = 0
    brownouts: int = 0
    model_changes: int = 0


TRUST_PATH = "/api/v1/device/trust"  # the fleet server's trust document (root keys, revocation list)


class _CachingModelManager(ModelManager):
    """A ModelManager whose chain artifacts (bytes, report) are read once per process."""

    def __init__(self, *args: Any, cache: dict[tuple[str, str], ModelArtifact], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache = cache

    def artifact_for(self, level: int) -> ModelArtifact:
        if not 0 <= level < len(self.chain) or (level == 0 and self.primary_replaced):
            return super().artifact_for(level)  # errors, and an installed release: not the shared cache
        key = (str(self.chain.levels[level].directory), self.profile.name)
        art = self._cache.get(key)
        if art is None:
            art = self._cache[key] = super().artifact_for(level)
        return art


def _stable_seed(text: str) -> int:
    # hash() is salted per process; a device's stream must be the same run after run.
    return int.from_bytes(text.encode()[:8].ljust(8, b"\0"), "little") % (2**31)


def rss_kb() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Agent:
    """One device. ``start()``, then ``step()`` / ``run_until()`` / ``run_forever()``, then ``stop()``."""

    def __init__(self, config: AgentConfig, options: AgentOptions | None = None) -> None:
        self.config = config
        self.options = options if options is not None else AgentOptions()
        self.profile = config.profile
        self.device_id = config.device_id
        self.counters = AgentCounters()
        self.stop_event = threading.Event()
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._started = False
        self._stopped = False
        self._start_wall = time.monotonic()
        self._battery: tuple[float | None, bool] = (None, False)
        self._brownout_reported = False
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)

        self.chain = ModelChain.from_dir(config.model_dir)
        self.board: Board = self.options.board if self.options.board is not None else self._make_board()
        self.store = SlotStore.for_profile(self.state_dir / "slots", self.profile)
        self.buffer = DiskBuffer(
            self.state_dir / "telemetry-buffer", BufferSettings(fsync=self.options.buffer_fsync)
        )
        self.publisher = TelemetryPublisher(self.device_id, self.buffer)
        self.intake = CommandIntake(self.device_id, seen_path=self.state_dir / "seen-commands.json")
        cache = self.options.artifact_cache
        self.manager: ModelManager = (
            _CachingModelManager(self.profile, self.chain, cache=cache)
            if cache is not None
            else ModelManager(self.profile, self.chain)
        )
        self.policy = FallbackPolicy(len(self.chain), config.fallback)
        self.loop = InferenceLoop(
            self.board,
            self.manager,
            device_id=self.device_id,
            sink=self._on_window,
            event_sink=self.publisher.publish,
            policy=self.policy,
            config=config.loop,
            first_seq=self._load_state().get("next_seq", 0),
        )
        self.link = MqttLink(
            self._mqtt_settings(),
            self.buffer,
            self.status,
            intake=self.intake,
            extra_status=self.extra_status,
        )
        self.ota: Any = None  # device_agent.ota_client.OtaClient, made when first needed
        self._register_commands()

    # -- construction helpers ----------------------------------------------------------------------

    def _make_board(self) -> Board:
        clock = self.options.clock if self.options.clock is not None else PacedClock(1.0, self.stop_event)
        stream = self.options.stream_config or StreamConfig(seed=_stable_seed(self.device_id))
        return make_simulated_board(
            self.profile,
            task=self.chain.task,  # type: ignore[arg-type]
            flash_root=self.state_dir / "flash",
            stream_config=stream,
            battery=self.options.battery,
            charging=self.options.charging,
            clock=clock,
        )

    def _mqtt_settings(self) -> MqttSettings:
        b = self.config.broker
        tls = TlsSettings(ca_file=b.tls_ca_file) if b.tls_ca_file is not None else None
        return MqttSettings.from_url(
            self.device_id,
            b.url,
            username=b.username,
            password=b.read_password(),
            client_id=b.client_id,
            keepalive_s=b.keepalive_s,
            tls=tls,
            protocol=b.protocol,
            poll_s=self.options.mqtt_poll_s,
            reconnect_min_s=self.options.reconnect_min_s,
            reconnect_max_s=self.options.reconnect_max_s,
        )

    def _register_commands(self) -> None:
        # Handlers run on the link thread: they only queue work for the agent thread.
        self.intake.register("cmd.ping", lambda cmd: self.link.request_status(reply_to=cmd.cmd_id))
        self.intake.register("cmd.update", lambda cmd: self._queue(self._cmd_update, cmd))
        self.intake.register("cmd.rollback", lambda cmd: self._queue(self._cmd_rollback, cmd))
        self.intake.register("cmd.shadow", lambda cmd: self._queue(self._cmd_shadow, cmd))
        self.intake.register("cmd.fallback_policy", lambda cmd: self._queue(self._cmd_fallback_policy, cmd))

    def _queue(self, fn: Callable[[Any], None], cmd: Any) -> None:
        self._commands.put(lambda: fn(cmd))

    # -- persisted agent state (window seq across restarts) -----------------------------------------

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.state_dir / STATE_FILE).read_text())
            return data if isinstance(data, dict) and isinstance(data.get("next_seq", 0), int) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # The server de-duplicates by (device, seq); a lost counter only risks re-used seqs.
            log.error("agent state %s unreadable (%s); window seq restarts at 0", STATE_FILE, exc)
            return {}

    def _save_state(self, next_seq: int) -> None:
        path = self.state_dir / STATE_FILE
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"next_seq": next_seq}))
            os.replace(tmp, path)
        except OSError as exc:
            log.error("could not persist %s: %s", path, exc)

    # -- start ------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            raise RuntimeError("agent already started")
        self._started = True
        self._provision_if_empty()
        if self._ota_unfinished():
            self._ota_client()  # resume(): boots the slot store (trial counting, revert), finishes the update
        else:
            # Nothing to resume: boot without the OTA client, which pulls in cryptography and bsdiff4
            # (~9 MB RSS); it is made on the first update or rollback command.
            decision = self.store.boot()
            if decision.event:
                log.warning("slot store at boot: %s", decision.event)
        try:
            self.loop.start()
        except ModelLoadError as exc:
            raise AgentError(
                f"no model of {self.config.model_dir} loads on {self.profile.name}: {exc}"
            ) from exc
        self._follow_active_slot()
        self._refresh_snapshot()
        self.link.start()
        log.info(
            "agent %s started on %s: model %s, slot %s",
            self.device_id,
            self.profile.name,
            self._active_label(),
            self.store.state.active,
        )

    def _provision_if_empty(self) -> None:
        if self.store.is_provisioned():
            return
        errors = []
        for level in range(len(self.chain)):
            try:
                art = self.manager.artifact_for(level)
            except ModelLoadError as exc:
                errors.append(f"level {level}: {exc}")
                continue
            # Counter 0: a factory image never blocks a signed release (the anti-rollback floor starts low).
            self.store.provision(art.model_bytes, counter=0)
            log.info("slot store provisioned with %s (chain level %d)", art.source, level)
            return
        raise AgentError(
            f"cannot provision the slot store: no chain model fits {self.profile.name}: " + "; ".join(errors)
        )

    def _ota_unfinished(self) -> bool:
        from device_agent.ota_state import TERMINAL, RecordUnreadable, load_record

        st = self.store.state
        if st.trial or st.pending is not None:
            return True
        try:
            record = load_record(self.store.root)
        except RecordUnreadable:
            return True  # the client rebuilds it from the slot store
        return record is not None and record.state not in TERMINAL

    def _ota_client(self) -> Any:
        """The OTA client, made (and resumed) on first use."""
        if self.ota is None:
            self.ota = self._make_ota_client()
            self.ota.resume()
        return self.ota

    def _make_ota_client(self) -> Any:
        from device_agent.http_download import HttpFetcher
        from device_agent.ota_client import GoldenHealthCheck, OtaClient
        from device_agent.trust_refresh import load_persisted
        from ota.trust import DeviceTrust

        trust = load_persisted(
            self.state_dir,
            DeviceTrust(
                root_public_keys=list(self.options.root_public_keys),
                hardware_class=self.profile.name,
                installed_counter=self.store.state.installed_counter,
                agent_version=AGENT_VERSION,
            ),
        )
        # The fleet server's device routes take HTTP Basic (device id + the MQTT secret); a separate
        # bearer download token is only for artifact servers that want one.
        if self.options.download_token:
            fetcher = HttpFetcher(token=self.options.download_token)
        else:
            fetcher = HttpFetcher(credentials=(self.device_id, self.config.broker.read_password() or ""))
        health = GoldenHealthCheck(
            self.profile,
            lambda manifest: (self.find_companions(manifest.artifact_sha256) or (None, None))[0],
            max_latency_us=self.config.health.max_latency_us,
        )
        return OtaClient(
            self.store.root,
            self.store,
            trust,
            fetcher,
            health,
            device_id=self.device_id,
            sink=self.publisher.publish,
            # Trust decisions (manifest expiry, key validity) need the real date, not the simulated one.
            clock=lambda: datetime.now(UTC),
            energy=UpdateEnergyPolicy(self.config.energy),
            battery=lambda: self._battery,
            on_model_changed=lambda _path: self._follow_active_slot(),
        )

    # -- models in slots ---------------------------------------------------------------------------------

    def find_companions(self, sha256: str) -> tuple[Path, str] | None:
        """The converter directory (report.json + golden.npz) of the model whose bytes hash to ``sha256``,
        and the variant name; None when the device has none."""
        dirs = [lv.directory for lv in self.chain.levels]
        releases = self.state_dir / RELEASES_DIR
        if releases.is_dir():
            dirs += sorted(p for p in releases.iterdir() if (p / REPORT_FILE).is_file())
        for d in dirs:
            try:
                report = read_report(d)
            except ModelLoadError:
                continue
            for name, variant in report.variants.items():
                if variant.sha256 == sha256:
                    return d, name
        return None

    def _chain_level_of(self, sha256: str) -> int | None:
        """The chain level whose variant for this hardware class is the model with this sha256."""
        for level in range(len(self.chain)):
            try:
                art = self.manager.artifact_for(level)
            except ModelLoadError:
                continue
            if art.report.variants[art.variant].sha256 == sha256:
                return level
        return None

    def _slot_artifact(self, slot_path: Path, sha256: str, counter: int) -> ModelArtifact:
        found = self.find_companions(sha256)
        if found is None:
            raise ModelLoadError(
                f"{slot_path}: no report.json/golden.npz on the device names sha256 "
                f"{sha256[:12]}… (put them in {self.state_dir / RELEASES_DIR}/<release>/)"
            )
        directory, variant = found
        report = read_report(directory)
        golden = directory / report.golden.file
        return ModelArtifact(
            name=report.name,
            version=counter if counter > 0 else numeric_version(report.version),
            variant=variant,
            model_bytes=slot_path.read_bytes(),
            report=report,
            golden_path=golden if golden.is_file() else None,
            source=str(slot_path),
        )

    def _follow_active_slot(self) -> None:
        """Run the model in the active slot (after boot, an install or a revert); the current model
        stays if it cannot load. The swap takes effect at the next sample."""
        active = self.manager.active
        if active is None:  # before the loop started: start() follows the slot once the chain is up
            return
        image = self.store.active_image()
        if _sha(active.artifact) == image.sha256:
            return
        level = self._chain_level_of(image.sha256)
        release: ModelArtifact | None = None
        try:
            if level is not None:
                model = self.manager.load_level(level)
            else:
                release = self._slot_artifact(self.store.active_path(), image.sha256, image.counter)
                model = self.manager.load_artifact(release, level=0)
        except ModelLoadError as exc:
            log.error("active slot's model not loaded, keeping %s: %s", self._active_label(), exc)
            self._publish_error("model", "slot_model_not_loaded", str(exc))
            return
        # A release from the slot becomes level 0 (what fallback returns to); a chain model gives it back.
        self.manager.set_primary(release)
        self.manager.swap(model)
        if release is not None:
            self.policy.replace_level(0)
        elif level is not None:
            self.policy.follow(level)
        self.counters.model_changes += 1
        log.info("now running %s from slot %s", model.label, self.store.state.active)
        self.link.request_status()

    def _active_label(self) -> str:
        m = self.manager.active
        return m.label if m is not None else "none"

    # -- commands (agent thread) --------------------------------------------------------------------------

    def _cmd_update(self, cmd: Any) -> None:
        ota = self._ota_client()
        if self._trust_url() is not None:
            self._refresh_revocations(ota)
        # The release's report and golden file first: the trial health check needs them.
        try:
            fetch_companions(cmd, self.state_dir, ota.transport)
        except Exception as exc:  # the update still runs; its health check then names what is missing
            log.warning("companions of %s not fetched: %s", getattr(cmd, "release_id", "?"), exc)
            self._publish_error("ota", "companions_failed", str(exc))
        ota.accept_update(cmd)
        ota.poll()
        self.link.request_status()

    def _trust_url(self) -> str | None:
        if self.options.trust_url:
            return self.options.trust_url
        if self.config.fetch_revocations:
            return self.config.server_url.rstrip("/") + TRUST_PATH
        return None

    def _refresh_revocations(self, ota: Any) -> None:
        """Take the server's newest revocation list before installing (a revoked key's release is then
        refused); a failure keeps the list already held and is reported, the update still goes on."""
        from device_agent.trust_refresh import TrustRefreshError, refresh

        url, held = self._trust_url(), ota.installer.trust
        assert url is not None
        try:
            ota.installer.trust = refresh(held, url=url, transport=ota.transport, state_dir=self.state_dir)
        except TrustRefreshError as exc:
            log.warning("%s", exc)
            self._publish_error("ota", "trust_refresh_failed", str(exc))

    def _cmd_rollback(self, cmd: Any) -> None:
        ota = self._ota_client()
        ota.accept_rollback(cmd)
        ota.poll()
        self.link.request_status()

    def _cmd_shadow(self, cmd: Any) -> None:
        if not cmd.enabled:
            shadow = self.loop.disable_shadow()
            log.info("shadow mode off (%s)", shadow.totals if shadow else "was off")
            self.link.request_status()
            return
        st = self.store.state
        other = "b" if st.active == "a" else "a"
        image = st.image(other)  # type: ignore[arg-type]
        if image is None:
            self._publish_error("shadow", "no_candidate", "shadow mode refused: the inactive slot is empty")
            return
        if cmd.candidate_version is not None and image.counter != cmd.candidate_version:
            self._publish_error(
                "shadow",
                "wrong_candidate",
                f"shadow refused: inactive slot holds release {image.counter}, not {cmd.candidate_version}",
            )
            return
        try:
            art = self._slot_artifact(self.store.slot_path(other), image.sha256, image.counter)  # type: ignore[arg-type]
            candidate = self.manager.load_artifact(art)
        except ModelLoadError as exc:
            self._publish_error("shadow", "candidate_not_loaded", str(exc))
            return
        self.loop.enable_shadow(
            candidate,
            sample_fraction=cmd.sample_fraction,
            candidate_version=image.counter,
            energy_budget_fraction=self.config.shadow.energy_budget_fraction,
        )
        log.info("shadow mode on: %s on %.0f %% of samples", candidate.label, 100 * cmd.sample_fraction)
        self.link.request_status()

    def _cmd_fallback_policy(self, cmd: Any) -> None:
        # The server's knobs map onto the policy's; recover_after_s becomes whole windows.
        t = self.policy.t
        update: dict[str, Any] = {
            "max_latency_us": cmd.max_latency_us,
            "max_consecutive_errors": cmd.max_consecutive_errors,
            "recover_windows": max(1, math.ceil(cmd.recover_after_s / self.config.loop.window_s)),
        }
        if cmd.min_battery_pct is not None:
            update["min_battery_pct"] = cmd.min_battery_pct
        self.policy.t = t.model_copy(update=update)
        log.info("fallback policy set by %s: %s (steps %s)", cmd.cmd_id, update, cmd.chain)

    def _publish_error(self, component: str, code: str, message: str, *, fatal: bool = False) -> None:
        log.warning("%s/%s: %s", component, code, message)
        self.publisher.publish(
            ErrorEvent(
                device_id=self.device_id,
                ts=int(self.board.clock.now()),
                component=component,
                code=code,
                message=message[:256],
                fatal=fatal,
            )
        )

    def _run_commands(self) -> None:
        while True:
            try:
                job = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                job()
                self.counters.commands_run += 1
            except Exception as exc:  # one bad command must not stop the device
                self.counters.command_errors += 1
                log.exception("command failed")
                self._publish_error("agent", "command_failed", f"{type(exc).__name__}: {exc}")

    # -- running ------------------------------------------------------------------------------------------

    def _on_window(self, window: Any) -> None:
        self.publisher.publish(window)
        self._save_state(window.seq + 1)
        self._refresh_snapshot()

    def _refresh_snapshot(self) -> None:
        try:
            b = self.board.battery()
            self._battery = (b.percent, b.charging)
        except Exception:  # a flaky fuel gauge must not stop the loop
            log.exception("battery read failed")

    def step(self) -> StepResult | None:
        """One wake: run queued commands, advance an OTA update, then one inference-loop step."""
        self.counters.steps += 1
        self._run_commands()
        if self.ota is not None and self.ota.state == "deferred":
            self.ota.poll()  # the energy policy may allow the download now
        try:
            return self.loop.step()
        except BrownoutError as exc:
            self.counters.brownouts += 1
            if not self._brownout_reported:
                self._brownout_reported = True
                self._publish_error("board", "brownout", str(exc), fatal=True)
            self.board.clock.sleep(self.config.loop.sample_period_s)
        except Exception as exc:
            self.counters.step_errors += 1
            log.exception("loop step failed")
            self._publish_error("agent", "step_failed", f"{type(exc).__name__}: {exc}")
            self.board.clock.sleep(self.config.loop.sample_period_s)
        return None

    def run_until(self, t_monotonic: float) -> None:
        """Step until the board's monotonic clock reaches ``t_monotonic`` (simulated time)."""
        clock = self.board.clock
        while clock.monotonic() < t_monotonic and not self.stop_event.is_set():
            self.step()

    def run_for(self, sim_seconds: float) -> None:
        self.run_until(self.board.clock.monotonic() + sim_seconds)

    def run_forever(self) -> None:
        while not self.stop_event.is_set():
            self.step()

    def stop(self, *, drain_timeout_s: float = 2.0) -> None:
        """Close the open window, give the link a moment to deliver, publish offline, disconnect."""
        if self._stopped:
            return
        self._stopped = True
        self.stop_event.set()
        if self._started:
            try:
                self.loop.close_window()
            except Exception:
                log.exception("closing the last window failed")
            if self.link.connected:
                self.link.wait_drained(drain_timeout_s)
        self.link.stop()
        self.buffer.close()
        log.info("agent %s stopped: %s", self.device_id, json.dumps(self.summary()))

    # -- status -------------------------------------------------------------------------------------------

    def status(self) -> Status:
        """The Status message (called on the link thread: reads snapshots and locked state only)."""
        model = self.manager.active
        pct, charging = self._battery
        try:
            slot = self.store.state.active
        except Exception:
            slot = None
        return Status(
            device_id=self.device_id,
            ts=int(self.board.clock.now()),
            uptime_s=min(int(time.monotonic() - self._start_wall), 4_294_967_295),
            hardware_class=self.profile.name,
            agent_version=AGENT_VERSION,
            model=model_record(model) if model is not None else None,
            active_slot=slot,
            fallback_level=min(self.policy.level, 15),
            shadow_enabled=self.loop.shadow is not None,
            battery_pct=None if pct is None else round(pct, 2),
            charging=charging,
            rss_kb=rss_kb(),
        )

    def extra_status(self) -> dict[str, Any]:
        """Counters riding as extra Status keys (decoders ignore unknown keys)."""
        st = self.buffer.stats()
        c = self.intake.counters
        return {
            "buffer_pending": st.pending,
            "buffer_dropped": st.dropped_records,
            "cmd_received": c.received,
            "cmd_rejected": c.rejected,
            "inferences": self.loop.stats.inferences,
            "windows": self.loop.stats.windows,
            "ota_state": self.ota.state if self.ota is not None else "idle",
            # The agent must never import TensorFlow; the status says so, tests check it.
            "tensorflow_imported": "tensorflow" in sys.modules,
        }

    def summary(self) -> dict[str, Any]:
        """Per-device counters for the simulator's results and the stop log line."""
        s = self.loop.stats
        pct, charging = self._battery
        shadow = self.loop.shadow
        return {
            "device_id": self.device_id,
            "hardware_class": self.profile.name,
            "model": self._active_label(),
            "sim_time_s": round(self.board.clock.monotonic(), 3),
            "windows_sent": s.windows,
            "inferences": s.inferences,
            "positives": s.positives,
            "false_positive_reports": s.false_positive_reports,
            "fallback_switches": s.switches,
            "fallback_level": self.policy.level,
            "invoke_failures": s.invoke_failures,
            "ota_state": self.ota.state if self.ota is not None else "idle",
            "active_slot": self.store.state.active,
            "battery_pct": None if pct is None else round(pct, 3),
            "charging": charging,
            "shadow_samples": shadow.totals.samples if shadow is not None else 0,
            "agent": vars(self.counters).copy(),
            "publisher": self.publisher.counters.as_dict(),
            "link": self.link.counters.as_dict(),
            "commands": self.intake.counters.as_dict(),
            "buffer_pending": self.buffer.stats().pending if not self.buffer_closed else None,
        }

    @property
    def buffer_closed(self) -> bool:
        return self._stopped


def _sha(artifact: ModelArtifact) -> str:
    rec = artifact.report.variants.get(artifact.variant)
    if rec is not None and artifact.source.endswith(rec.file):
        return rec.sha256
    import hashlib

    return hashlib.sha256(artifact.model_bytes).hexdigest()


def load_agent(config_path: Path | str, options: AgentOptions | None = None) -> Agent:
    """An Agent from a ``device.toml`` (raises device_agent.config.ConfigError naming the bad key)."""
    from device_agent.config import load_config

    return Agent(load_config(config_path), options)
