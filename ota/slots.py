"""A/B model slot store: the device-side half of "never brick".

The store is a directory standing in for flash::

    slot_a.bin  slot_b.bin            the two model slots (one image each, at most ``capacity`` bytes)
    slot_a.meta.json  slot_b.meta.json  checksummed copy of each verified slot's record (last-resort recovery)
    state.0.json  state.1.json        the state record, two alternating checksummed copies
    staging.patch                     a downloaded delta, before it is applied

Rules, each of which the power-loss test checks after every kill: the active slot is never
written; bytes become durable before any record points at them; every state change is one atomic
replace of one state copy; a new image runs on trial until :meth:`commit`; :meth:`boot` counts trial
boots and reverts by itself after ``max_boot_attempts``; the installed counter advances on commit
only and never decreases. docs/ota-slot-store.md explains each transition.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from firmware_stubs.hardware_profiles import HardwareProfile, get_profile
from ota.atomic_io import atomic_write, remove_durably, sha256_of_file
from ota.errors import ArtifactTooLargeError, DowngradeError, HashMismatchError
from ota.resumable_write import ResumableWriter
from ota.slot_errors import (
    InstallStateError,
    NoBootableSlotError,
    NotProvisionedError,
    RefusedReleaseError,
)
from ota.slot_state import (
    MAX_REFUSED,
    SLOT_NAMES,
    PatchSpec,
    PendingUpdate,
    RefusedRelease,
    SlotImage,
    SlotName,
    StoreState,
    other_slot,
    read_copies,
    write_state,
)

DEFAULT_MAX_BOOT_ATTEMPTS = 3
DEFAULT_CHECKPOINT_BYTES = 64 * 1024
# Each checkpoint costs three fsyncs and one state-copy write (flash wear); a large image gets at
# most this many, so its checkpoint interval grows with it (64 KiB minimum; 1 MiB for 32 MiB).
MAX_CHECKPOINTS_PER_IMAGE = 32


@dataclass(frozen=True)
class BootDecision:
    """What :meth:`SlotStore.boot` chose: the slot to load and why."""

    slot: SlotName
    path: Path
    image: SlotImage
    trial: bool
    boot_attempts: int
    # Set when boot() changed something by itself: a revert, a fallback or a recovery.
    event: str | None


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


class SlotStore:
    """Two slots plus a persisted state record under ``root``. One process owns a store at a time."""

    def __init__(
        self,
        root: Path | str,
        *,
        capacity: int,
        max_boot_attempts: int = DEFAULT_MAX_BOOT_ATTEMPTS,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
    ) -> None:
        if capacity <= 0 or max_boot_attempts < 1:
            raise ValueError("capacity must be positive and max_boot_attempts at least 1")
        self.root = Path(root)
        self.capacity = capacity
        self.max_boot_attempts = max_boot_attempts
        self.checkpoint_bytes = checkpoint_bytes
        self._state: StoreState | None = None
        self._recovered = False  # load() had to rebuild the record: boot() reports it once

    @classmethod
    def for_profile(cls, root: Path | str, profile: HardwareProfile | str, **kwargs: int) -> SlotStore:
        """A store whose slot capacity is the hardware class's per-slot model flash budget."""
        hw = get_profile(profile) if isinstance(profile, str) else profile
        return cls(root, capacity=hw.model_flash_budget_bytes, **kwargs)

    # -- paths ---------------------------------------------------------------------------------------

    def slot_path(self, slot: SlotName) -> Path:
        return self.root / f"slot_{slot}.bin"

    def meta_path(self, slot: SlotName) -> Path:
        return self.root / f"slot_{slot}.meta.json"

    @property
    def patch_path(self) -> Path:
        return self.root / "staging.patch"

    # -- state ---------------------------------------------------------------------------------------

    @property
    def state(self) -> StoreState:
        if self._state is None:
            self._state = self.load()
        return self._state

    def load(self) -> StoreState:
        """Read the newest valid state copy (recovering from slot metadata if none is valid)."""
        copies = read_copies(self.root)
        if not copies:
            self._state = self._recover_from_slot_metadata()
            return self._state
        newest = copies[0]
        # The counter floor is the highest any valid copy ever recorded: an older copy never lowers it.
        floor = max(c.installed_counter for c in copies)
        if floor != newest.installed_counter:
            newest = newest.model_copy(update={"installed_counter": floor})
        self._state = newest
        return newest

    def _save(self, state: StoreState, *, seal: bool = False, **changes: object) -> StoreState:
        """Write the next generation. ``seal`` writes it to both copies, for transitions (commit,
        revert) whose loss would matter if the newest copy were later damaged: the fallback copy
        then holds the same decision instead of the one before it."""
        new = StoreState.model_validate({**state.model_dump(), **changes, "generation": state.generation + 1})
        write_state(self.root, new)
        if seal:
            new = new.model_copy(update={"generation": new.generation + 1})
            write_state(self.root, new)
        self._state = new
        return new

    def is_provisioned(self) -> bool:
        return bool(read_copies(self.root))

    # -- slot metadata (last-resort recovery) --------------------------------------------------------

    def _write_meta(self, slot: SlotName, image: SlotImage) -> None:
        record = image.model_dump(mode="json")
        digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
        atomic_write(self.meta_path(slot), json.dumps({"record": record, "sha256": digest}).encode())

    def _read_meta(self, slot: SlotName) -> SlotImage | None:
        try:
            outer = json.loads(self.meta_path(slot).read_bytes())
            record = outer["record"]
            if hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest() != outer["sha256"]:
                return None
            return SlotImage.model_validate(record)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _slot_matches(self, slot: SlotName, image: SlotImage | None) -> bool:
        if image is None or not self.slot_path(slot).exists():
            return False
        digest, count = sha256_of_file(self.slot_path(slot), image.length + 1)
        return count == image.length and digest == image.sha256

    def _recover_from_slot_metadata(self) -> StoreState:
        """Both state copies are unreadable: rebuild from the slots whose bytes match their metadata.

        With two good slots the higher counter goes on trial with the other as its fallback, so the
        health check decides; the counter floor is the highest counter seen (may be too high, never
        too low).
        """
        good = [(s, img) for s in SLOT_NAMES if self._slot_matches(s, img := self._read_meta(s))]
        if not good:
            if any(self.root.glob("state.*.json")) or any(self.slot_path(s).exists() for s in SLOT_NAMES):
                raise NoBootableSlotError(
                    f"{self.root}: no readable state record and no slot whose bytes match its metadata"
                )
            raise NotProvisionedError(f"{self.root}: no slot store here; provision a factory image first")
        good.sort(key=lambda pair: pair[1].counter)
        active, image = good[-1]
        trial = len(good) == 2 and good[0][1].counter != image.counter
        state = StoreState(
            generation=2,  # any generation works: the unreadable copies are ignored and get overwritten
            active=active,
            trial=trial,
            installed_counter=max(img.counter for _, img in good),
            slots={s: dict(good).get(s) for s in SLOT_NAMES},
            last_event="recovered: state record unreadable, rebuilt from slot metadata",
        )
        write_state(self.root, state)
        self._state = state
        self._recovered = True
        return state

    # -- provisioning --------------------------------------------------------------------------------

    def provision(self, image: bytes, *, counter: int, manifest: bytes | None = None) -> StoreState:
        """Factory step: put ``image`` in slot A as the committed model. Refused on a provisioned store."""
        if self.is_provisioned():
            raise InstallStateError(f"{self.root} is already provisioned")
        if len(image) > self.capacity:
            raise ArtifactTooLargeError(
                f"factory image of {len(image)} bytes exceeds the slot's {self.capacity}"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        record = SlotImage(
            sha256=hashlib.sha256(image).hexdigest(),
            length=len(image),
            counter=counter,
            manifest_b64=_b64(manifest),
        )
        atomic_write(self.slot_path("a"), image)
        self._write_meta("a", record)
        state = StoreState(
            generation=0, active="a", installed_counter=counter, slots={"a": record, "b": None}
        )
        write_state(self.root, state)
        # Both copies hold the factory state, so damage to either still leaves a readable one.
        return self._save(state)

    # -- boot ----------------------------------------------------------------------------------------

    def boot(self) -> BootDecision:
        """Called once per device start, before loading a model (the bootloader's job in Mender).

        Counts trial boots and reverts after ``max_boot_attempts`` uncommitted ones; checks the
        chosen slot's bytes against its record and falls back to the other slot if they differ.
        """
        st = self.load()
        event: str | None = st.last_event if self._recovered else None
        self._recovered = False
        if st.trial:
            if st.boot_attempts >= self.max_boot_attempts:
                event = f"reverted: trial not committed after {st.boot_attempts} boot attempts"
                st = self._revert(st, event)
            else:
                st = self._save(st, boot_attempts=st.boot_attempts + 1)
        if not self._slot_matches(st.active, st.image(st.active)):
            if st.trial:
                event = "reverted: trial image does not match its record"
                st = self._revert(st, event)
            if not self._slot_matches(st.active, st.image(st.active)):
                other = other_slot(st.active)
                if not self._slot_matches(other, st.image(other)):
                    raise NoBootableSlotError(f"{self.root}: neither slot matches its record")
                event = f"fallback: slot {st.active} does not match its record, booting slot {other}"
                # No pending update can survive this: one would target `other`, whose record would be empty.
                st = self._save(
                    st, active=other, pending=None, last_event=event, slots={**st.slots, st.active: None}
                )
        image = st.image(st.active)
        assert image is not None  # _slot_matches(None) is False
        return BootDecision(st.active, self.slot_path(st.active), image, st.trial, st.boot_attempts, event)

    def active_image(self) -> SlotImage:
        image = self.state.image(self.state.active)
        if image is None:
            raise NoBootableSlotError(f"{self.root}: active slot has no record")
        return image

    def active_path(self) -> Path:
        return self.slot_path(self.state.active)

    def read_active(self) -> bytes:
        return self.active_path().read_bytes()

    # -- install -------------------------------------------------------------------------------------

    def begin_update(
        self,
        *,
        kind: str,
        manifest: bytes,
        sha256: str,
        length: int,
        counter: int,
        patch: PatchSpec | None = None,
    ) -> PendingUpdate:
        """Record an update towards the inactive slot, or return the matching one in progress (resume)."""
        st = self.state
        if st.trial:
            raise InstallStateError("a trial is running: commit or revert it before installing another")
        if length > self.capacity:
            raise ArtifactTooLargeError(
                f"image of {length} bytes exceeds the slot capacity of {self.capacity}"
            )
        if counter <= st.installed_counter:
            raise DowngradeError(f"counter {counter} is not above the installed {st.installed_counter}")
        if st.is_refused(counter):
            raise RefusedReleaseError(f"release with counter {counter} was reverted on this device before")
        if (kind == "delta") != (patch is not None):
            raise ValueError("a delta update needs a patch spec and a full one none")
        p = st.pending
        if p and p.sha256 == sha256 and p.kind == kind and p.patch == patch and p.counter == counter:
            return p
        target = other_slot(st.active)
        pending = PendingUpdate(
            phase="downloading",
            slot=target,
            kind=kind,
            manifest_b64=_b64(manifest) or "",
            sha256=sha256,
            length=length,
            counter=counter,
            patch=patch,
        )
        st = self._save(st, pending=pending.model_dump(), slots={**st.slots, target: None}, last_event=None)
        remove_durably(self.meta_path(target))
        remove_durably(self.patch_path)
        return pending

    def _pending(self, phase: str | None = None) -> PendingUpdate:
        p = self.state.pending
        if p is None or (phase is not None and p.phase != phase):
            raise InstallStateError(f"no update in phase {phase or 'any'} (pending: {p and p.phase})")
        return p

    def _update_pending(self, **changes: object) -> None:
        p = self._pending()
        self._save(self.state, pending={**p.model_dump(), **changes})

    def _interval(self, length: int) -> int:
        return max(self.checkpoint_bytes, length // MAX_CHECKPOINTS_PER_IMAGE)

    def open_slot_writer(self) -> ResumableWriter:
        """Writer for the inactive slot, positioned at the durable offset of the pending update."""
        p = self._pending("downloading")
        if p.slot == self.state.active:  # the invariant everything rests on
            raise InstallStateError("refusing to write the active slot")
        return ResumableWriter(
            self.slot_path(p.slot),
            progress=p.progress,
            expected_length=p.length,
            checkpoint_bytes=self._interval(p.length),
            persist=lambda prog: self._update_pending(progress=prog.model_dump()),
        )

    def open_patch_writer(self) -> ResumableWriter:
        p = self._pending("downloading")
        if p.patch is None:
            raise InstallStateError("the pending update is not a delta")
        return ResumableWriter(
            self.patch_path,
            progress=p.patch_progress,
            expected_length=p.patch.length,
            checkpoint_bytes=self._interval(p.patch.length),
            persist=lambda prog: self._update_pending(patch_progress=prog.model_dump()),
        )

    def mark_patch_done(self) -> None:
        self._update_pending(patch_done=True)

    def mark_verified(self, *, sha256: str, length: int) -> SlotImage:
        """The caller verified the written bytes against the manifest; record the slot's image."""
        p = self._pending("downloading")
        if (sha256, length) != (p.sha256, p.length):
            raise HashMismatchError("written image does not match the pending update's record")
        image = SlotImage(sha256=sha256, length=length, counter=p.counter, manifest_b64=p.manifest_b64)
        self._write_meta(p.slot, image)
        self._save(
            self.state,
            pending={**p.model_dump(), "phase": "verified"},
            slots={**self.state.slots, p.slot: image.model_dump()},
        )
        remove_durably(self.patch_path)
        return image

    def abort_update(self, reason: str) -> None:
        """Drop the pending update; the active slot was never touched."""
        st = self.state
        if st.pending is None:
            return
        self._save(
            st, pending=None, slots={**st.slots, st.pending.slot: None}, last_event=f"aborted: {reason}"
        )
        remove_durably(self.meta_path(st.pending.slot))
        remove_durably(self.patch_path)

    def switch(self) -> None:
        """Make the verified inactive slot active, on trial: one atomic state write."""
        p = self._pending("verified")
        image = self.state.image(p.slot)
        if not self._slot_matches(p.slot, image):
            self.abort_update("slot changed between verification and switch")
            raise HashMismatchError(f"slot {p.slot} no longer matches the verified image")
        self._save(self.state, active=p.slot, trial=True, boot_attempts=0, pending=None, last_event=None)

    def commit(self) -> None:
        """The trial passed its health check: keep it and advance the anti-rollback counter."""
        st = self.state
        if not st.trial:
            raise InstallStateError("no trial to commit")
        image = self.active_image()
        self._save(
            st,
            seal=True,
            trial=False,
            boot_attempts=0,
            last_event=None,
            installed_counter=max(st.installed_counter, image.counter),
        )

    def revert(self, reason: str) -> None:
        """The trial failed: go back to the previous slot and remember the release as refused."""
        st = self.state
        if not st.trial:
            raise InstallStateError("no trial to revert")
        self._revert(st, f"reverted: {reason}")

    def rollback(self, reason: str) -> None:
        """Server-ordered rollback: boot the previous image in the other slot, trial or committed.

        The current release is refused like a reverted trial; the counter floor stays where it is
        (it never decreases), so the next install needs a release newer than the one rolled back.
        """
        st = self.state
        if st.trial:
            self.revert(reason)
            return
        previous = other_slot(st.active)
        if st.pending is not None or not self._slot_matches(previous, st.image(previous)):
            raise InstallStateError("rollback refused: the other slot holds no verified previous model")
        self._revert(st, f"rolled back: {reason}")

    def _revert(self, st: StoreState, reason: str) -> StoreState:
        bad = st.active
        image = st.image(bad)
        refused = list(st.refused)
        if image is not None and not st.is_refused(image.counter):
            refused.append(RefusedRelease(counter=image.counter, sha256=image.sha256, reason=reason))
        st = self._save(
            st,
            seal=True,
            active=other_slot(bad),
            trial=False,
            boot_attempts=0,
            pending=None,
            slots={**st.slots, bad: None},
            refused=[r.model_dump() for r in refused[-MAX_REFUSED:]],
            last_event=reason,
        )
        remove_durably(self.meta_path(bad))
        return st
