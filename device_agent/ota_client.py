"""The device agent's OTA client: an explicit, persisted state machine around ``ota.installer.Installer``.

Modelled on Mender's client: every step is a named state (:mod:`device_agent.ota_state`), the state and
its data are persisted atomically *before* the step runs, and every step is idempotent against the slot
store's own record, so a power cut anywhere resumes from the named state when a new process calls
:meth:`OtaClient.resume` (which first calls :meth:`ota.slots.SlotStore.boot`, the bootloader's job).

The client makes no trust decision (``ota.trust`` does, through the installer) and does no I/O of its
own besides its state file: the transport (:class:`Transport`, HTTP in production), the clock, the
battery reading, the health check and the report sink are injected, so every transition is testable
without HTTP or MQTT.

Threading: :meth:`accept_update` / :meth:`accept_rollback` only record a command (cheap, safe from the
MQTT thread via :meth:`register`); :meth:`poll` does the work on the agent's own thread.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from device_agent.energy_policy import UpdateEnergyPolicy
from device_agent.http_download import DownloadError, RangeIgnored
from device_agent.ota_state import (
    TERMINAL,
    WIRE_STATE,
    ClientState,
    OtaRecord,
    RecordUnreadable,
    load_record,
    save_record,
)
from ota.canonical import parse_document
from ota.errors import OtaError
from ota.installer import ChunkSource, Installer, InstallPlan
from ota.manifest import Manifest, manifest_from_document
from ota.slot_errors import InstallStateError
from ota.slot_state import other_slot
from ota.slots import SlotStore
from ota.trust import DeviceTrust
from telemetry.device_codec import (
    OtaStateChanged,
    OtaStatus,
    Rollback,
    UpdateAvailable,
    as_dict,
    record_from_dict,
)

log = logging.getLogger(__name__)

OtaMessage = OtaStateChanged | OtaStatus
Sink = Callable[[OtaMessage], None]
Clock = Callable[[], datetime]
# (battery percent or None on mains power, charging)
BatteryReader = Callable[[], tuple[float | None, bool]]

MAX_MANIFEST_BYTES = 64 * 1024
_MAX_RANGE_RESTARTS = 2
_TEXT_MAX = 256  # telemetry Text fields


class Transport(Protocol):
    """How the client gets bytes; :class:`device_agent.http_download.HttpFetcher` in production."""

    bytes_received: int

    def fetch(self, url: str, *, max_bytes: int) -> bytes: ...

    def source(self, url: str) -> ChunkSource: ...


@dataclass(frozen=True)
class HealthVerdict:
    passed: bool
    reason: str | None = None


# Runs the trial model from ``model_path`` on this device; the manifest names model, version, variant.
TrialCheck = Callable[[Path, Manifest], HealthVerdict]


class DownloadDeferred(Exception):
    """Raised between chunks when the energy policy says stop; the download resumes later."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def _clip(text: str | None) -> str | None:
    return None if text is None else text[:_TEXT_MAX]


def _command_dict(cmd: Any) -> dict[str, Any]:
    """The command's wire form (JSON-able), from a device-codec record or a pydantic command."""
    dump = getattr(cmd, "model_dump", None)
    return dump(mode="json") if dump is not None else as_dict(cmd)


def _wire_state(state: ClientState) -> str:
    # Schema 1.1 has "deferred"; ota_state.WIRE_STATE (written for 1.0) still maps it to "idle".
    return "deferred" if state == "deferred" else WIRE_STATE[state]


def _manifest_of(manifest_b64: str) -> Manifest:
    """Structural parse of a manifest that was verified when it was installed (for names, not trust)."""
    return manifest_from_document(parse_document(base64.b64decode(manifest_b64), what="manifest"))


class OtaClient:
    """One device's OTA client. ``root`` holds the client's state file (normally the slot store's dir)."""

    def __init__(
        self,
        root: Path | str,
        store: SlotStore,
        trust: DeviceTrust,
        transport: Transport,
        health_check: TrialCheck,
        *,
        device_id: str,
        sink: Sink | None = None,
        clock: Clock = utc_now,
        energy: UpdateEnergyPolicy | None = None,
        battery: BatteryReader | None = None,
        on_model_changed: Callable[[Path], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self.store = store
        self.transport = transport
        self.health_check = health_check
        self.device_id = device_id
        self.sink = sink
        self.clock = clock
        self.energy = energy
        self.battery = battery
        self.on_model_changed = on_model_changed
        self._bytes_done = 0
        self._booted = False  # SlotStore.boot() ran in this process after the last switch
        self.installer = Installer(store, trust, on_progress=self._on_progress)
        self._record = OtaRecord()
        self._handlers: dict[str, Callable[[], None]] = {
            "deferred": self._deferred,
            "downloading": self._download,
            "verifying": self._verify,
            "installing": self._install,
            "rebooting": self._reboot,
            "health_check": self._health_check,
            "rolling_back": self._roll_back,
        }

    # -- public surface -------------------------------------------------------------------------------

    @property
    def record(self) -> OtaRecord:
        return self._record

    @property
    def state(self) -> ClientState:
        return self._record.state

    def register(self, intake: Any) -> None:
        """Route ``cmd.update`` / ``cmd.rollback`` of a :class:`device_agent.commands.CommandIntake` here."""
        intake.register("cmd.update", self.accept_update)
        intake.register("cmd.rollback", self.accept_rollback)

    def resume(self) -> OtaRecord:
        """After a (re)start: boot the slot store, reconcile with the persisted record, continue."""
        self.store.boot()
        self._booted = True
        try:
            record = load_record(self.root)
        except RecordUnreadable as exc:
            log.error("%s; rebuilding from the slot store", exc)
            record = self._rebuild_record(str(exc))
        if record is None:
            record = OtaRecord()
            save_record(self.root, record)
        self._record = record
        st = self.store.state
        if st.trial and record.state not in ("installing", "rebooting", "health_check", "rolling_back"):
            # A trial the record does not know about (record lost or older): finish it, never leave it.
            image = self.store.active_image()
            self._go("health_check", target_sha256=image.sha256, reason="resuming an unfinished trial")
        if st.pending is not None:
            self._bytes_done = st.pending.progress.offset or st.pending.patch_progress.offset
        return self.poll()

    def accept_update(self, cmd: UpdateAvailable) -> OtaRecord:
        """Record an update command (no network, no flash writes beyond the state file)."""
        rec = self._record
        if rec.cmd_id == cmd.cmd_id and rec.state not in ("failed",):
            return rec  # redelivered command (QoS 1)
        if rec.state not in TERMINAL and rec.state != "deferred":
            log.warning("update %s ignored: update %s is in state %s", cmd.cmd_id, rec.cmd_id, rec.state)
            self._emit_status(rec, error=f"busy with {rec.release_id} ({rec.state})", cmd=cmd)
            return rec
        st = self.store.state
        active = self.store.active_image()
        common: dict[str, Any] = {
            "cmd_id": cmd.cmd_id,
            "release_id": cmd.release_id,
            "command": _command_dict(cmd),
            "target_version": cmd.target_version,
            "from_version": active.counter,
            "target_sha256": None,
            "manifest_b64": None,
            "kind": None,
            "bytes_done": 0,
            "bytes_total": 0,
            "error_code": None,
            "reason": None,
            # A new command for the release that failed to download continues that download (attempt + 1).
            "attempt": min(255, rec.attempt + 1) if rec.release_id == cmd.release_id else 1,
        }
        if active.sha256 == cmd.artifact.sha256 and not st.trial:
            # Already running it (e.g. a redelivery after commit): never reinstall a committed release.
            common.update(target_sha256=active.sha256, reason="already installed")
            self._record = rec.to("committed", **common)
            self._persist_and_report(rec.state)
            return self._record
        self._record = rec.to("downloading", **common)
        self._persist_and_report(rec.state)
        return self._record

    def accept_rollback(self, cmd: Rollback) -> OtaRecord:
        rec = self._record
        if rec.cmd_id == cmd.cmd_id:
            return rec
        active = self.store.active_image()
        self._record = rec.to(
            "rolling_back",
            cmd_id=cmd.cmd_id,
            release_id=cmd.release_id or cmd.cmd_id,
            command=_command_dict(cmd),
            target_sha256=active.sha256,  # what is being rolled back
            target_version=cmd.to_version if cmd.to_version is not None else 0,
            from_version=active.counter,
            error_code=None,
            reason=_clip(cmd.reason),
        )
        self._persist_and_report(rec.state)
        return self._record

    def handle_update(self, cmd: UpdateAvailable) -> OtaRecord:
        """accept + run to the next resting state (tests, single-threaded agents)."""
        self.accept_update(cmd)
        return self.poll()

    def handle_rollback(self, cmd: Rollback) -> OtaRecord:
        self.accept_rollback(cmd)
        return self.poll()

    def poll(self) -> OtaRecord:
        """Run states until a resting one: terminal, or deferred for energy. Never raises for a bad update."""
        while self.state not in TERMINAL:
            before = self._record.generation
            try:
                self._handlers[self.state]()
            except DownloadDeferred as exc:
                if self.state != "deferred":  # still deferred: nothing changed, nothing to report
                    self._to("deferred", bytes_done=self._bytes_done, reason=str(exc))
                break
            except DownloadError as exc:
                # The pending update stays in the store: a later command for it resumes from its offset.
                self._to("failed", error_code=exc.code, reason=exc.message)
            except OtaError as exc:
                self._to("failed", error_code=exc.code, reason=exc.message)
            except OSError as exc:
                # Flash full or failing: report it; the slot store's record still names a bootable slot.
                self._to("failed", error_code="io_error", reason=f"{type(exc).__name__}: {exc}")
            if self.state == "deferred" or self._record.generation == before:
                break
        return self._record

    # -- states ---------------------------------------------------------------------------------------

    def _command(self) -> UpdateAvailable:
        assert self._record.command is not None
        cmd = record_from_dict(self._record.command)
        if not isinstance(cmd, UpdateAvailable):
            raise TypeError(f"the recorded command is a {cmd.type}, not an update")
        return cmd

    def _check_energy(self) -> None:
        if self.energy is None or self.battery is None:
            return
        pct, charging = self.battery()
        gate = self.energy.decide(pct, charging)
        if not gate.allowed:
            raise DownloadDeferred(gate.reason)

    def _deferred(self) -> None:
        self._check_energy()
        self._to("downloading", reason="resumed: energy condition cleared")

    def _manifest_bytes(self) -> bytes:
        rec = self._record
        if rec.manifest_b64 is not None:
            return base64.b64decode(rec.manifest_b64)
        data = self.transport.fetch(self._command().manifest.url, max_bytes=MAX_MANIFEST_BYTES)
        self._record = rec.model_copy(update={"manifest_b64": base64.b64encode(data).decode()})
        save_record(self.root, self._record)
        return data

    def _plan(self) -> InstallPlan:
        cmd = self._command()
        return self.installer.plan(
            self._manifest_bytes(), now=self.clock(), allow_delta=cmd.delta is not None
        )

    def _download(self) -> None:
        self._check_energy()
        plan = self._plan()
        rec = self._record
        if rec.kind != plan.kind or rec.target_sha256 != plan.manifest.artifact_sha256:
            self._record = rec.model_copy(
                update={
                    "kind": plan.kind,
                    "target_sha256": plan.manifest.artifact_sha256,
                    "bytes_total": plan.download_length,
                }
            )
            save_record(self.root, self._record)
        cmd = self._command()
        url = cmd.delta.url if plan.kind == "delta" and cmd.delta is not None else cmd.artifact.url
        source = self._gated(self.transport.source(url))
        for restart in range(_MAX_RANGE_RESTARTS + 1):
            try:
                self.installer.download(plan, source)
                break
            except RangeIgnored as exc:
                # The server ignored Range: start over from byte 0 rather than splice a body onto a prefix.
                if restart == _MAX_RANGE_RESTARTS:
                    raise DownloadError(f"{exc}; gave up after {restart} restarts from byte 0") from None
                log.warning("%s; restarting the download from byte 0", exc)
                self.store.abort_update("server ignored Range; restarting from byte 0")
                plan = self._plan()
        self._to("verifying", bytes_done=self._bytes_done)

    def _gated(self, source: ChunkSource) -> ChunkSource:
        def chunks(offset: int) -> Any:
            self._bytes_done = offset
            for block in source(offset):
                yield block
                self._check_energy()  # stop between chunks when the battery drops

        return chunks

    def _verify(self) -> None:
        pending = self.store.state.pending
        if pending is None or pending.sha256 != self._record.target_sha256:
            self._to("downloading", reason="no downloaded image to verify; downloading again")
            return
        self.installer.verify(self._plan())
        self._to("installing")

    def _install(self) -> None:
        st = self.store.state
        active = self.store.active_image()
        target = self._record.target_sha256
        if active.sha256 != target:
            if st.pending is None or st.pending.phase != "verified" or st.pending.sha256 != target:
                self._to("verifying", reason="switch found no verified image; verifying again")
                return
            self.installer.activate()
            self._booted = False
            self._notify_model_changed()
        self._to("rebooting")

    def _reboot(self) -> None:
        # The new slot takes over at the next boot; boot() counts the trial attempt (Mender's bootcount).
        if not self._booted:
            self.store.boot()
            self._booted = True
        self._to("health_check")

    def _health_check(self) -> None:
        st = self.store.state
        active = self.store.active_image()
        target = self._record.target_sha256
        if not st.trial:
            if active.sha256 == target:
                self._to("committed", reason="trial committed")
            else:  # reverted by boot() (too many boot attempts) or before a crash
                self._to(
                    "reverted", error_code="health_check_failed", reason=st.last_event or "trial reverted"
                )
            return
        try:
            verdict = self.health_check(self.store.active_path(), _manifest_of(active.manifest_b64 or ""))
        except Exception as exc:  # a check that crashes is a failed check, never a stuck trial
            verdict = HealthVerdict(False, f"health check raised {type(exc).__name__}: {exc}")
        if verdict.passed:
            self.installer.finish_trial(healthy=True)
            self._to("committed", reason="health check passed")
        else:
            reason = verdict.reason or "health check failed"
            self.installer.finish_trial(healthy=False, reason=reason)
            self._notify_model_changed()
            self._to("reverted", error_code="health_check_failed", reason=reason)

    def _roll_back(self) -> None:
        st = self.store.state
        active = self.store.active_image()
        rolled = self._record.target_sha256
        if active.sha256 != rolled:
            self._to("rolled_back", reason=self._record.reason)
            return
        previous = st.image(other_slot(st.active))
        wanted = self._record.target_version or None
        if previous is None:
            raise InstallStateError("rollback refused: the other slot holds no previous model")
        if wanted is not None and previous.counter != wanted:
            raise InstallStateError(
                f"rollback refused: the other slot holds release {previous.counter}, not {wanted}"
            )
        reason = f"rollback command: {self._record.reason or 'no reason given'}"
        if st.trial:
            self.store.revert(reason)
        else:
            self.store.abort_update("rollback command")
            self.store.rollback(reason)
        self._notify_model_changed()
        self._to("rolled_back", reason=self._record.reason)

    # -- bookkeeping ------------------------------------------------------------------------------------

    def _on_progress(self, stage: str, done: int, total: int) -> None:
        self._bytes_done = done

    def _notify_model_changed(self) -> None:
        if self.on_model_changed is not None:
            self.on_model_changed(self.store.active_path())

    def _to(self, state: ClientState, **changes: Any) -> None:
        old = self._record.state
        if "reason" in changes:
            changes["reason"] = _clip(changes["reason"])
        if state not in ("failed", "reverted"):
            changes.setdefault("error_code", None)
        self._record = self._record.to(state, **changes)
        self._persist_and_report(old)

    def _persist_and_report(self, old: ClientState) -> None:
        save_record(self.root, self._record)
        rec = self._record
        log.info("ota %s: %s -> %s (%s)", rec.cmd_id, old, rec.state, rec.reason or "")
        reason = rec.reason if rec.error_code is None else f"{rec.error_code}: {rec.reason}"
        self._emit(
            OtaStateChanged(
                device_id=self.device_id,
                ts=self._ts(),
                release_id=rec.release_id or "none",
                from_state=_wire_state(old),
                to_state=_wire_state(rec.state),
                reason=_clip(reason),
                cmd_id=rec.cmd_id,
            )
        )
        self._emit_status(rec)

    def _emit_status(
        self, rec: OtaRecord, *, error: str | None = None, cmd: UpdateAvailable | None = None
    ) -> None:
        if error is None and rec.error_code is not None:
            error = f"{rec.error_code}: {rec.reason}"
        elif error is None and rec.state == "deferred":
            error = rec.reason
        total = rec.bytes_total
        done = min(rec.bytes_done, total) if total else 0
        self._emit(
            OtaStatus(
                device_id=self.device_id,
                ts=self._ts(),
                release_id=(cmd.release_id if cmd else rec.release_id) or "none",
                target_version=(cmd.target_version if cmd else rec.target_version),
                from_version=rec.from_version,
                state=_wire_state(rec.state),
                via_delta=rec.kind == "delta",
                bytes_done=done,
                bytes_total=total,
                attempt=rec.attempt,
                error=_clip(error),
                cmd_id=cmd.cmd_id if cmd else rec.cmd_id,
            )
        )

    def _emit(self, message: OtaMessage) -> None:
        if self.sink is None:
            return
        try:
            self.sink(message)
        except Exception:  # a broken publisher must not stop an update half-way
            log.exception("OTA report sink failed")

    def _ts(self) -> int:
        return int(self.clock().timestamp())

    def _rebuild_record(self, why: str) -> OtaRecord:
        """The client's file is damaged: what the slot store alone says (a trial is finished, not lost)."""
        st = self.store.state
        if st.pending is not None:
            # Without the command we do not know where to download from: drop it (active slot untouched).
            self.store.abort_update("OTA client record unreadable")
        image = self.store.active_image()
        state: ClientState = "health_check" if st.trial else "idle"
        record = OtaRecord(state=state, target_sha256=image.sha256, reason=_clip(why))
        save_record(self.root, record)
        return record


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class GoldenHealthCheck:
    """The trial check of :mod:`device_agent.health_check` (fits, loads, golden outputs, latency).

    ``companions(manifest)`` gives the directory holding the release's converter ``report.json`` and
    ``golden.npz``. They are bound to the signed artifact before use: the report must name the
    manifest's artifact sha256 for its variant, and the golden file must hash to the report's record.
    """

    def __init__(
        self,
        profile: Any,
        companions: Callable[[Manifest], Path | None],
        *,
        max_latency_us: float | None = None,
        input_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.profile = profile
        self.companions = companions
        self.max_latency_us = max_latency_us
        self.input_transform = input_transform

    def __call__(self, model_path: Path, manifest: Manifest) -> HealthVerdict:
        # Imported here: numpy and the runtimes are only needed once a trial runs.
        from device_agent.health_check import run_health_check
        from device_agent.model_manager import ModelArtifact, numeric_version, read_report
        from device_agent.runtime.base import ModelLoadError

        directory = self.companions(manifest)
        label = f"{manifest.model} {manifest.version}"
        if directory is None:
            return HealthVerdict(False, f"golden: no report/golden inputs available for {label}")
        try:
            report = read_report(directory)
        except ModelLoadError as exc:
            return HealthVerdict(False, f"golden: {exc}")
        variant = report.variants.get(manifest.variant)
        if variant is None or variant.sha256 != manifest.artifact_sha256:
            return HealthVerdict(False, f"golden: report in {directory} is not for the {label} artifact")
        golden = directory / report.golden.file
        recorded = report.artifacts.get(report.golden.file)
        try:
            golden_sha = sha256_hex(golden.read_bytes())
        except OSError as exc:
            return HealthVerdict(False, f"golden: cannot read {golden} ({exc.strerror})")
        if recorded is None or recorded.sha256 != golden_sha:
            return HealthVerdict(False, f"golden: {golden} does not match its report")
        artifact = ModelArtifact(
            name=manifest.model,
            version=numeric_version(manifest.version),
            variant=manifest.variant,
            model_bytes=model_path.read_bytes(),
            report=report,
            golden_path=golden,
            source=str(model_path),
        )
        result = run_health_check(
            artifact, self.profile, max_latency_us=self.max_latency_us, input_transform=self.input_transform
        )
        return HealthVerdict(result.passed, result.reason)
