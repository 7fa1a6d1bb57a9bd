"""The OTA client's persisted state record: which named state the update is in, and its data.

One JSON file (``ota_client.json`` beside the slot store) replaced atomically after every transition
with :func:`ota.atomic_io.atomic_write` (temp, fsync, rename, fsync dir), and checksummed so that a
damaged file is detected rather than half-trusted. The slot store keeps its own record; the two are
reconciled on :meth:`device_agent.ota_client.OtaClient.resume` (the store is the authority on slots,
this record on what the client was doing and for which command).

States (Mender's client is the model; the wire name in telemetry is in :data:`WIRE_STATE`)::

    idle ─► deferred ─► downloading ─► verifying ─► installing ─► rebooting ─► health_check ─► committed
              ▲  │          │              │                                      │
              └──┘          └──────────────┴──► failed                             └─► reverted
    (any terminal state) ─► rolling_back ─► rolled_back          (rollback command)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

from ota.atomic_io import atomic_write
from ota.slot_state import StateSchemaError, StrictRecord

# telemetry.schemas.OtaState's vocabulary (telemetry.wire.OTA_STATES), spelled out here: importing the
# pydantic schemas would cost the agent ~15 MB at start-up, where this record is read.
OtaState = Literal[
    "idle", "downloading", "downloaded", "verifying", "verified", "installing", "trial", "committed",
    "reverting", "reverted", "failed", "deferred",
]

ClientState = Literal[
    "idle",
    "deferred",
    "downloading",
    "verifying",
    "installing",
    "rebooting",
    "health_check",
    "committed",
    "reverted",
    "rolling_back",
    "rolled_back",
    "failed",
]

TERMINAL: Final[frozenset[str]] = frozenset({"idle", "committed", "reverted", "rolled_back", "failed"})

# The telemetry schema's vocabulary (telemetry.schemas.OtaState) for each client state.
WIRE_STATE: Final[dict[str, OtaState]] = {
    "idle": "idle",
    "deferred": "idle",  # waiting for energy; the reason text says "deferred: ..."
    "downloading": "downloading",
    "verifying": "verifying",
    "installing": "installing",
    "rebooting": "trial",
    "health_check": "trial",
    "committed": "committed",
    "reverted": "reverted",
    "rolling_back": "reverting",
    "rolled_back": "reverted",
    "failed": "failed",
}

FILE_NAME: Final = "ota_client.json"
FORMAT_VERSION: Final = 1


@dataclass(frozen=True, kw_only=True)
class OtaRecord(StrictRecord):
    """Everything the client needs to continue after a power cut.

    A checked dataclass (ota.slot_state's strict record: types, Literal values, unknown keys refused),
    not a pydantic model: the agent reads it at every start-up. Same JSON form as before.
    """

    format_version: Literal[1] = FORMAT_VERSION
    generation: int = 0
    state: ClientState = "idle"
    cmd_id: str | None = None
    release_id: str | None = None
    # The UpdateAvailable command as received (JSON form): URLs and hints for resuming the download.
    command: dict[str, Any] | None = None
    manifest_b64: str | None = None  # the signed manifest as fetched (re-verified on every resume)
    target_sha256: str | None = None
    target_version: int = 0
    from_version: int | None = None
    kind: Literal["full", "delta"] | None = None
    bytes_done: int = 0
    bytes_total: int = 0
    attempt: int = 1  # download attempts for this command, 1..255
    error_code: str | None = None
    reason: str | None = None  # why the last transition happened (deferral, failure, health check)
    _NON_NEGATIVE: ClassVar[frozenset[str]] = frozenset({"generation", "bytes_done", "bytes_total"})

    def _validate(self) -> None:
        if not 1 <= self.attempt <= 255:
            raise StateSchemaError(f"attempt: must be 1..255, got {self.attempt}")

    def to(self, state: ClientState, **changes: Any) -> OtaRecord:
        return self.model_copy(update={**changes, "state": state, "generation": self.generation + 1})


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def save_record(root: Path, record: OtaRecord) -> None:
    body = record.model_dump(mode="json")
    data = {"record": body, "sha256": hashlib.sha256(_canonical(body)).hexdigest()}
    atomic_write(root / FILE_NAME, json.dumps(data, sort_keys=True, indent=1).encode())


class RecordUnreadable(ValueError):
    """The state file exists but is truncated, garbled or fails its checksum."""


def load_record(root: Path) -> OtaRecord | None:
    """The persisted record; None when there is none yet. Raises RecordUnreadable when damaged."""
    path = root / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        outer = json.loads(raw)
        body = outer["record"]
        if hashlib.sha256(_canonical(body)).hexdigest() != outer["sha256"]:
            raise RecordUnreadable(f"{path}: checksum mismatch")
        return OtaRecord.model_validate(body)
    except (ValueError, KeyError, TypeError) as exc:  # StateSchemaError is a ValueError
        if isinstance(exc, RecordUnreadable):
            raise
        raise RecordUnreadable(f"{path}: unreadable OTA client record ({type(exc).__name__})") from None
