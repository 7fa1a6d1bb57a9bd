"""The slot store's persisted state record: schema, checksummed encoding, redundant copies.

The record lives in two files, ``state.0.json`` and ``state.1.json``; generation ``g`` is written to
``state.{g % 2}.json`` by atomic replace, so the other file always holds generation ``g - 1``. Each
file is ``{"record": {...}, "sha256": "<hex of the canonical record JSON>"}``. A reader takes the
valid copy with the highest generation; a truncated or garbled copy is ignored (U-Boot's redundant
environment works the same way). Every state transition of the store is written so that the
previous generation is also a state the device can boot from (docs/ota-slot-store.md).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from firmware_stubs.typecheck import Rules, check_value
from ota.atomic_io import atomic_write

SlotName = Literal["a", "b"]
SLOT_NAMES: tuple[SlotName, SlotName] = ("a", "b")
FORMAT_VERSION = 1
# Reverted releases remembered so the same bad release is not retried forever; bounded for flash.
MAX_REFUSED = 16

Sha256Hex = str


def other_slot(slot: SlotName) -> SlotName:
    return "b" if slot == "a" else "a"


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class StateSchemaError(ValueError):
    """A state record (or a record given to a constructor) breaks the schema; names the field."""


def _fail(loc: str, msg: str) -> StateSchemaError:
    return StateSchemaError(f"{loc}: {msg}")


def _nested(tp: Any, v: Any, loc: str) -> Any:
    if not (isinstance(tp, type) and issubclass(tp, _Strict)):
        return NotImplemented
    if isinstance(v, tp):
        return v
    if isinstance(v, dict):
        return tp.model_validate(v, loc=loc)
    raise _fail(loc, f"must be a {tp.__name__} record, got {type(v).__name__}")


_RULES = Rules(fail=_fail, join=lambda loc, key: f"{loc}.{key}", nested=_nested)


def _dump(v: Any, json_mode: bool) -> Any:
    if isinstance(v, _Strict):
        return v.model_dump(mode="json" if json_mode else "python")
    if isinstance(v, dict):
        return {k: _dump(x, json_mode) for k, x in v.items()}
    if isinstance(v, tuple):
        items = [_dump(x, json_mode) for x in v]
        return items if json_mode else tuple(items)
    return v


@dataclass(frozen=True, kw_only=True)
class _Strict:
    """A frozen record checked on construction (types, Literal values, sha256 patterns, ``ge=0``).

    Plain dataclasses, not pydantic: the slot store's boot path runs in the device agent, which cannot
    afford pydantic's ~15 MB. ``model_dump`` / ``model_validate`` / ``model_copy`` keep the names (and the
    JSON form) the pydantic records had, so the on-disk format is unchanged.
    """

    _SHA_FIELDS: ClassVar[frozenset[str]] = frozenset()
    _NON_NEGATIVE: ClassVar[frozenset[str]] = frozenset()

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):
            v = getattr(self, f.name)
            new = check_value(hints[f.name], v, f.name, _RULES)
            if f.name in self._SHA_FIELDS and new is not None and not _SHA256.match(new):
                raise _fail(f.name, f"must be 64 lowercase hex digits, got {new!r}")
            if f.name in self._NON_NEGATIVE and new < 0:
                raise _fail(f.name, f"must be at least 0, got {new}")
            if new is not v:
                object.__setattr__(self, f.name, new)
        self._validate()

    def _validate(self) -> None:
        """Cross-field rules of a subclass; raise StateSchemaError via _fail("field", "...")."""

    @classmethod
    def model_validate(cls, record: Any, *, loc: str = "") -> Self:
        """A record from its dict form; unknown or missing keys and bad values raise StateSchemaError."""
        prefix = f"{loc}." if loc else ""
        if not isinstance(record, dict):
            raise _fail(loc or cls.__name__, f"must be a mapping, got {type(record).__name__}")
        known = {f.name: f for f in fields(cls)}
        for key in record:
            if key not in known:
                raise _fail(f"{prefix}{key}", "extra field not permitted")
        for name, f in known.items():
            if name not in record and f.default is MISSING and f.default_factory is MISSING:
                raise _fail(f"{prefix}{name}", "field required")
        try:
            return cls(**record)
        except StateSchemaError as exc:
            raise StateSchemaError(f"{prefix}{exc}") from None

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]:
        return {f.name: _dump(getattr(self, f.name), mode == "json") for f in fields(self)}

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Self:
        """A changed copy (like pydantic's model_copy, the update is not re-validated)."""
        new = copy.copy(self)
        for k, v in (update or {}).items():
            object.__setattr__(new, k, v)
        return new


StrictRecord = _Strict  # the base, for other persisted device records (device_agent.ota_state)
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = _HINTS[cls] = typing.get_type_hints(cls)
    return h


@dataclass(frozen=True, kw_only=True)
class SlotImage(_Strict):
    """A verified image held by a slot."""

    sha256: Sha256Hex
    length: int
    counter: int
    # The signed manifest it was installed from (base64), kept opaque: the store makes no trust decision.
    manifest_b64: str | None = None
    _SHA_FIELDS: ClassVar[frozenset[str]] = frozenset({"sha256"})
    _NON_NEGATIVE: ClassVar[frozenset[str]] = frozenset({"length", "counter"})


@dataclass(frozen=True, kw_only=True)
class WriteProgress(_Strict):
    """How far a resumable write got: bytes [0, offset) are durable and hash to prefix_sha256."""

    offset: int = 0
    prefix_sha256: Sha256Hex = _EMPTY_SHA256
    _SHA_FIELDS: ClassVar[frozenset[str]] = frozenset({"prefix_sha256"})
    _NON_NEGATIVE: ClassVar[frozenset[str]] = frozenset({"offset"})


@dataclass(frozen=True, kw_only=True)
class PatchSpec(_Strict):
    """A delta to download into the staging file and apply against the active slot."""

    sha256: Sha256Hex
    length: int
    base_sha256: Sha256Hex
    _SHA_FIELDS: ClassVar[frozenset[str]] = frozenset({"sha256", "base_sha256"})
    _NON_NEGATIVE: ClassVar[frozenset[str]] = frozenset({"length"})


@dataclass(frozen=True, kw_only=True)
class PendingUpdate(_Strict):
    """An update in progress towards the inactive slot (Mender's Download/ArtifactInstall states)."""

    phase: Literal["downloading", "verified"]
    slot: SlotName
    kind: Literal["full", "delta"]
    manifest_b64: str
    sha256: Sha256Hex
    length: int
    counter: int
    patch: PatchSpec | None = None
    patch_progress: WriteProgress = field(default_factory=WriteProgress)
    patch_done: bool = False
    progress: WriteProgress = field(default_factory=WriteProgress)
    _SHA_FIELDS: ClassVar[frozenset[str]] = frozenset({"sha256"})
    _NON_NEGATIVE: ClassVar[frozenset[str]] = frozenset({"length", "counter"})


@dataclass(frozen=True, kw_only=True)
class RefusedRelease(_Strict):
    counter: int
    sha256: Sha256Hex
    reason: str


@dataclass(frozen=True, kw_only=True)
class StoreState(_Strict):
    format_version: Literal[1] = FORMAT_VERSION
    generation: int
    active: SlotName
    # True while the active slot runs a new image on trial; the other slot holds the previous one.
    trial: bool = False
    boot_attempts: int = 0
    # Anti-rollback floor: advances on commit only, never decreases.
    installed_counter: int
    refused: tuple[RefusedRelease, ...] = ()
    slots: dict[SlotName, SlotImage | None]
    pending: PendingUpdate | None = None
    # Why the last automatic transition happened (revert, fallback, recovery): for the agent's report.
    last_event: str | None = None
    _NON_NEGATIVE: ClassVar[frozenset[str]] = frozenset({"generation", "boot_attempts", "installed_counter"})

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
    except StateSchemaError as exc:
        raise ValueError(f"state copy has a bad schema: {exc}") from None


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
