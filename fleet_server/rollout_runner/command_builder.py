"""Turn the controller's Commands into outbox rows: one MQTT command per device, encoded once.

Each row gets its final ``cmd_id`` and payload bytes here, inside the decision's transaction; whatever
happens afterwards (crash, broker down, republish) sends exactly those bytes. Kinds:

* ``update`` / ``retarget``: ``UpdateAvailable`` built by the releases module
  (``fleet_server.releases.commands.update_available``: URLs of the device download routes, the delta from
  the device's running counter when one exists); retarget = the previous release (rapid rollback tier),
  held back ``rollout_retarget_delay_s`` so the immediate revert can work first;
* ``revert``: ``Rollback`` without a version (the device switches back to its other slot: immediate tier);
* ``shadow_on`` / ``shadow_off``: ``SetShadowMode``.

Encoding: ``telemetry.codec.encode`` (CBOR maps for commands), which ``device_agent.commands`` decodes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from fleet_server.db.releases import Release
from fleet_server.db.rollouts import RolloutCommand
from fleet_server.rollouts.model import Command
from telemetry.codec import encode
from telemetry.schemas import Rollback, SetShadowMode, UpdateAvailable
from telemetry.wire import TEXT_MAX_LEN


class UpdateFactory(Protocol):
    """``fleet_server.releases.commands.update_available``'s signature."""

    def __call__(
        self,
        release: Release,
        *,
        from_counter: int | None,
        base_url: str,
        cmd_id: str,
        issued_at: int,
        device_id: str = ...,
        hardware_class: str | None = None,
        artifact_dir: Path | None = None,
    ) -> UpdateAvailable: ...


def default_update_factory() -> UpdateFactory:
    """The releases module's builder (imported late: the releases work lands beside this one)."""
    from fleet_server.releases.commands import update_available

    return update_available  # type: ignore[no-any-return]


def new_cmd_id() -> str:
    return "rc-" + uuid.uuid4().hex  # 35 chars, within the wire's 64-char Ident


@dataclass
class CommandBuilder:
    base_url: str
    retarget_delay_s: float = 120.0
    shadow_sample_fraction: float = 0.25
    update_factory: UpdateFactory | Callable[[], UpdateFactory] | None = None
    # The artifact store: with it, update commands also reference the release's report and golden files
    # (the device's health check needs them) when the release recorded them (releases/<id>/files.json).
    artifact_dir: Path | None = None

    def _factory(self) -> UpdateFactory:
        f = self.update_factory
        if f is None:
            f = self.update_factory = default_update_factory()
        return f  # type: ignore[return-value]

    def rows(
        self,
        session: Session,
        rollout_id: str,
        decision_seq: int,
        commands: list[Command],
        running_counter: Mapping[str, int | None],
        now: float,
        device_class: Mapping[str, str] | None = None,
    ) -> list[RolloutCommand]:
        """Outbox rows for ``commands`` (not yet added to the session). ``device_class``: device id ->
        hardware class (the update names the class it is for; default: the release's first class)."""
        out: list[RolloutCommand] = []
        releases: dict[str, Release | None] = {}
        for command in commands:
            release = None
            if command.kind in ("update", "retarget"):
                if command.release_id not in releases:
                    releases[command.release_id] = session.get(Release, command.release_id)
                release = releases[command.release_id]
                if release is None:
                    raise LookupError(f"release {command.release_id!r} of a {command.kind} command is gone")
            not_before = now + self.retarget_delay_s if command.kind == "retarget" else None
            skipped = None
            if command.kind == "retarget":
                try:
                    self._factory()
                except ImportError:  # no release command builder in this install: the revert must do
                    skipped = "no update command builder (fleet_server.releases.commands) available"
            for device_id in command.device_ids:
                cmd_id = new_cmd_id()
                payload = b""
                if skipped is None:
                    hw = device_class.get(device_id) if device_class is not None else None
                    message = self._message(command, release, device_id, cmd_id, running_counter, now, hw)
                    payload = encode(message, "cbor")
                out.append(
                    RolloutCommand(
                        rollout_id=rollout_id,
                        decision_seq=decision_seq,
                        device_id=device_id,
                        kind=command.kind,
                        release_id=command.release_id,
                        cmd_id=cmd_id,
                        payload=payload,
                        created_at=now,
                        not_before=not_before,
                        skipped=skipped,
                    )
                )
        return out

    def _companions_dir(self, release: Release) -> Path | None:
        if self.artifact_dir is None:
            return None
        return (
            self.artifact_dir
            if (self.artifact_dir / "releases" / release.id / "files.json").exists()
            else None
        )

    def _message(
        self,
        command: Command,
        release: Release | None,
        device_id: str,
        cmd_id: str,
        running_counter: Mapping[str, int | None],
        now: float,
        hardware_class: str | None = None,
    ) -> Any:
        ts = int(now)
        reason = (command.reason or command.kind)[:TEXT_MAX_LEN]
        if command.kind in ("update", "retarget"):
            assert release is not None
            if hardware_class not in release.hardware_classes:
                hardware_class = None  # the release's own first class (the device is filtered by the target)
            return self._factory()(
                release,
                from_counter=running_counter.get(device_id),
                base_url=self.base_url,
                cmd_id=cmd_id,
                issued_at=ts,
                device_id=device_id,
                hardware_class=hardware_class,
                artifact_dir=self._companions_dir(release),
            )
        if command.kind == "revert":
            return Rollback(
                device_id=device_id, cmd_id=cmd_id, ts=ts, release_id=command.release_id, reason=reason
            )
        enabled = command.kind == "shadow_on"
        return SetShadowMode(
            device_id=device_id,
            cmd_id=cmd_id,
            ts=ts,
            enabled=enabled,
            sample_fraction=self.shadow_sample_fraction if enabled else 0.0,
            candidate_version=command.target_counter,
        )
