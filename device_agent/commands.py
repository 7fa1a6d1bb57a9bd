"""Command intake: decode, validate and de-duplicate server commands, then dispatch them by type.

Every payload that arrives on ``tinyfleet/v1/{device_id}/cmd`` goes through :meth:`CommandIntake.handle`,
which never raises: a bad command becomes one log line and one named counter, never a dead agent.
Handlers receive ``telemetry.device_codec`` command records (same names and fields as the pydantic
``telemetry.schemas`` commands; pydantic is never imported on this path). The OTA client and the model
manager register their handlers by command type (``"cmd.update"``,
``"cmd.rollback"``, ``"cmd.shadow"``, ``"cmd.fallback_policy"``, ``"cmd.ping"``).

Idempotence: MQTT QoS 1 is at-least-once, so a ``cmd_id`` seen before is ignored. The recent ids are
kept in memory (bounded) and, when ``seen_path`` is given, in a small JSON file so a redelivery after an
agent restart (persistent MQTT session) is still recognised.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

from telemetry.device_codec import decode_command
from telemetry.errors import (
    DeviceMismatch,
    MalformedPayload,
    PayloadTooLarge,
    SchemaViolation,
    TelemetryDecodeError,
    UnknownMessageType,
    UnsupportedVersion,
    WrongChannel,
)
from telemetry.topics import validate_device_id
from telemetry.wire import COMMAND_TYPES as _WIRE_COMMAND_TYPES

log = logging.getLogger(__name__)

COMMAND_TYPES: Final[tuple[str, ...]] = _WIRE_COMMAND_TYPES
DEFAULT_SEEN_CAPACITY: Final = 1024

Outcome = Literal[
    "dispatched",
    "duplicate",
    "malformed",
    "too_large",
    "wrong_device",
    "unsupported_version",
    "unknown_type",
    "schema_violation",
    "wrong_channel",
    "no_handler",
    "handler_error",
]

# Decode error class -> outcome/counter name. Order matters: first match wins (PayloadTooLarge is
# also a MalformedPayload's sibling, DeviceMismatch a TelemetryDecodeError).
_ERROR_OUTCOMES: Final[tuple[tuple[type[TelemetryDecodeError], Outcome], ...]] = (
    (PayloadTooLarge, "too_large"),
    (MalformedPayload, "malformed"),
    (UnsupportedVersion, "unsupported_version"),
    (UnknownMessageType, "unknown_type"),
    (DeviceMismatch, "wrong_device"),
    (WrongChannel, "wrong_channel"),
    (SchemaViolation, "schema_violation"),
)

Handler = Callable[[Any], None]


@dataclass(slots=True)
class CommandCounters:
    received: int = 0
    dispatched: int = 0
    duplicate: int = 0
    malformed: int = 0
    too_large: int = 0
    wrong_device: int = 0
    unsupported_version: int = 0
    unknown_type: int = 0
    schema_violation: int = 0
    wrong_channel: int = 0
    no_handler: int = 0
    handler_error: int = 0

    @property
    def rejected(self) -> int:
        """Commands that never reached a handler because they were bad (duplicates not included)."""
        return (self.malformed + self.too_large + self.wrong_device + self.unsupported_version
                + self.unknown_type + self.schema_violation + self.wrong_channel)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class CommandIntake:
    """Decode -> check addressee, version, type -> de-duplicate -> dispatch. Thread-safe; never raises."""

    def __init__(
        self,
        device_id: str,
        *,
        seen_path: str | os.PathLike[str] | None = None,
        seen_capacity: int = DEFAULT_SEEN_CAPACITY,
    ) -> None:
        self.device_id = validate_device_id(device_id)
        self.counters = CommandCounters()
        self._handlers: dict[str, Handler] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._capacity = seen_capacity
        self._seen_path = Path(seen_path) if seen_path is not None else None
        self._lock = threading.Lock()
        self._load_seen()

    def register(self, command_type: str, handler: Handler) -> None:
        """Route commands of ``command_type`` (e.g. ``"cmd.update"``) to ``handler(command)``."""
        if command_type not in COMMAND_TYPES:
            raise ValueError(f"unknown command type {command_type!r}; known: {', '.join(COMMAND_TYPES)}")
        with self._lock:
            self._handlers[command_type] = handler

    def handle(self, payload: bytes) -> Outcome:
        """Process one payload from the cmd topic; return what happened (also counted)."""
        with self._lock:
            self.counters.received += 1
            try:
                # The device codec (no pydantic): same verdicts as telemetry.codec.decode(...,
                # expected_channel="cmd"), commands as telemetry.device_codec records.
                command = decode_command(payload, device_id=self.device_id)
            except TelemetryDecodeError as exc:
                outcome = next((o for cls, o in _ERROR_OUTCOMES if isinstance(exc, cls)), "malformed")
                self._count(outcome)
                log.warning("command rejected (%s, %d bytes): %s", outcome, len(payload), exc)
                return outcome
            if command.cmd_id in self._seen:
                self._count("duplicate")
                log.info("command %s (%s) already seen; ignored", command.cmd_id, command.type)
                return "duplicate"
            handler = self._handlers.get(command.type)
            if handler is None:
                self._count("no_handler")
                log.warning("command %s of type %s has no registered handler; ignored", command.cmd_id,
                            command.type)
                return "no_handler"
            # Remember before running: a handler that crashes must not run again on redelivery.
            self._remember(command.cmd_id)
        try:
            handler(command)
        except Exception:
            with self._lock:
                self._count("handler_error")
            log.exception("handler for command %s (%s) failed", command.cmd_id, command.type)
            return "handler_error"
        with self._lock:
            self._count("dispatched")
        log.info("command %s (%s) dispatched", command.cmd_id, command.type)
        return "dispatched"

    def _count(self, outcome: Outcome) -> None:
        setattr(self.counters, outcome, getattr(self.counters, outcome) + 1)

    # ------------------------------------------------------------------ seen ids

    def _remember(self, cmd_id: str) -> None:
        self._seen[cmd_id] = None
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        self._save_seen()

    def _load_seen(self) -> None:
        if self._seen_path is None:
            return
        try:
            ids = json.loads(self._seen_path.read_text())
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError("expected a JSON list of strings")
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # Losing the memory only risks running a redelivered command twice; handlers are idempotent
            # at their own level (OTA state machine), so start empty rather than refuse to start.
            log.error("seen-command file %s unreadable (%s); starting with an empty set",
                      self._seen_path, exc)
            return
        for i in ids[-self._capacity :]:
            self._seen[i] = None

    def _save_seen(self) -> None:
        if self._seen_path is None:
            return
        tmp = self._seen_path.with_name(self._seen_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(list(self._seen)))
            os.replace(tmp, self._seen_path)
        except OSError as exc:
            log.error("could not persist seen-command ids to %s: %s", self._seen_path, exc)
