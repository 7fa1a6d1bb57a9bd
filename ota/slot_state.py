"""The slot store's persisted state record: schema, checksummed encoding, redundant copies.

The record lives in two files, ``state.0.json`` and ``state.1.json``; generation ``g`` is written to
``state.{g % 2}.json`` by atomic replace, so the other file always holds generation ``g - 1``. Each
file is ``{"record": {...}, "sha256": "<hex of the canonical record JSON>"}``. A reader takes the
valid copy with the highest generation; a truncated or garbled copy is ignored (U-Boot's redundant
environment works the same way). Every state transition of the store is written so that the
previous generation is also a state the device can boot from (docs/ota-slot-store.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ota.atomic_io import atomic_write

SlotName = Literal["a", "b"]
SLOT_NAMES: tuple[SlotName, SlotName] = ("a", "b")
FORMAT_VERSION = 1
# Reverted releases remembered so the same bad release is not retried forever; bounded for flash.
MAX_REFUSED = 16

Sha256Hex = str


def other_slot(slot: SlotName) -> SlotName:
    return "b" if slot == "a" else "a"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlotImage(_Strict):
    """A verified image held by a slot."""

    sha256: Sha256Hex = Field(pattern=r"^[0-9a-f]{64}$")
    length: int = Field(ge=0)
    counter: int = Field(ge=0)
    # The signed manifest it was installed from (base64), kept opaque: the store makes no trust decision.
    manifest_b64: str | None = None


class WriteProgress(_Strict):
    """How far a resumable write got: bytes [0, offset) are durable and hash to prefix_sha256."""

    offset: int = Field(ge=0, default=0)
    prefix_sha256: Sha256Hex = Field(pattern=r"^[0-9a-f]{64}$", default=hashlib.sha256(b"").hexdigest())


class PatchSpec(_Strict):
    """A delta to download into the staging file and apply against the active slot."""

    sha256: Sha256Hex = Field(pattern=r"^[0-9a-f]{64}$")
    length: int = Field(ge=0)
    base_sha256: Sha256Hex = Field(pattern=r"^[0-9a-f]{64}$")


class PendingUpdate(_Strict):
    """An update in progress towards the inactive slot (Mender's Download/ArtifactInstall states)."""

    phase: Literal["downloading", "verified"]
    slot: SlotName
    kind: Literal["full", "delta"]
    manifest_b64: str
    sha256: Sha256Hex = Field(pattern=r"^[0-9a-f]{64}$")
    length: int = Field(ge=0)
    counter: int = Field(ge=0)
    patch: PatchSpec | None = None
    patch_progress: WriteProgress = WriteProgress()
    patch_done: bool = False
    progress: WriteProgress = WriteProgress()


class RefusedRelease(_Strict):
    counter: int
    sha256: Sha256Hex
    reason: str


class StoreState(_Strict):
    format_version: Literal[1] = FORMAT_VERSION
    generation: int = Field(ge=0)
    active: SlotName
    # True while the active slot runs a new image on trial; the other slot holds the previous one.
    trial: bool = False
    boot_attempts: int = Field(ge=0, default=0)
    # Anti-rollback floor: advances on commit only, never decreases.
    installed_counter: int = Field(ge=0)
    refused: tuple[RefusedRelease, ...] = ()
    slots: dict[SlotName, SlotImage | None]
    pending: PendingUpdate | None = None
    # Why the last automatic transition happened (revert, fallback, recovery): for the agent's report.
    last_event: str | None = None

    def image(self, slot: SlotName) -> SlotImage | None:
        return self.slots.get(slot)

    def is_refused(self, counter: int) -> bool:
        return any(r.counter == counter for r in self.refused)


def _canonical(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def encode_state(state: StoreState) -> bytes:
    record = state.model_dump(mode="json")
    digest = hashlib.sha256(_canonical(record)).hexdigest()
    return json.dumps({"record": record, "sha256": digest}, sort_keys=True, indent=1).encode()


def decode_state(data: bytes) -> StoreState:
    """Parse one copy; raises ValueError when it is truncated, garbled or fails its checksum."""
    try:
        outer = json.loads(data)
        record = outer["record"]
        digest = outer["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"state copy unreadable: {exc}") from None
    if not isinstance(record, dict) or hashlib.sha256(_canonical(record)).hexdigest() != digest:
        raise ValueError("state copy fails its checksum")
    try:
        return StoreState.model_validate(record)
    except ValidationError as exc:
        raise ValueError(f"state copy has a bad schema: {exc.error_count()} errors") from None


def state_path(root: Path, generation: int) -> Path:
    return root / f"state.{generation % 2}.json"


def read_copies(root: Path) -> list[StoreState]:
    """Valid state copies found under ``root``, newest first."""
    found: list[StoreState] = []
    for index in (0, 1):
        path = root / f"state.{index}.json"
        try:
            state = decode_state(path.read_bytes())
        except (OSError, ValueError):
            continue
        # A copy in the wrong file (parity) was not written by us: ignore it.
        if state.generation % 2 == index:
            found.append(state)
    return sorted(found, key=lambda s: s.generation, reverse=True)


def write_state(root: Path, state: StoreState) -> None:
    atomic_write(state_path(root, state.generation), encode_state(state))
