"""Device-side install orchestration: verify -> download -> verify -> switch, then trial -> commit | revert.

Transport-agnostic: the caller passes a :data:`ChunkSource`, a callable that yields the artifact's
(or the patch's) bytes starting at a given offset, so a resumed download asks its transport for a
range (HTTP ``Range``, a file seek, a BLE block index...). Every trust decision is made by
:mod:`ota.trust`; every durable step by :class:`ota.slots.SlotStore`. The agent's OTA client wraps
this in its own persisted state machine; after a power cut it calls :meth:`SlotStore.boot` and then
:meth:`Installer.resume`.

Errors: an :class:`ota.errors.OtaError` while downloading or verifying aborts the pending update
(the active slot is untouched) and propagates; any other exception (a transport failure) propagates
and leaves the update pending, to be resumed from its last durable offset.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Literal

from ota.crashpoints import reached
from ota.delta import apply_patch
from ota.errors import OtaError
from ota.manifest import DeltaInfo, Manifest
from ota.resumable_write import ResumableWriter
from ota.slot_errors import InstallStateError, RefusedReleaseError
from ota.slot_state import PatchSpec, PendingUpdate, SlotImage
from ota.slots import SlotStore
from ota.trust import (
    DeviceTrust,
    check_slot_capacity,
    select_patch,
    verify_artifact,
    verify_manifest,
    verify_patch,
    verify_patch_base,
)

# Given a start offset, yield the bytes from there to the end (the transport is the caller's).
ChunkSource = Callable[[int], Iterable[bytes]]
# (stage, bytes done, bytes total); stage is "download", "patch-download" or "write".
ProgressCallback = Callable[[str, int, int], None]

DEFAULT_CHUNK = 64 * 1024


def bytes_source(data: bytes, chunk_size: int = DEFAULT_CHUNK) -> ChunkSource:
    """A source over bytes in memory (tests, or a transport that already holds the whole body)."""

    def chunks(offset: int) -> Iterator[bytes]:
        for start in range(offset, len(data), chunk_size):
            yield data[start : start + chunk_size]

    return chunks


def file_source(path: Path | str, chunk_size: int = DEFAULT_CHUNK) -> ChunkSource:
    """A source reading a file from an offset (a local mirror, a USB stick)."""

    def chunks(offset: int) -> Iterator[bytes]:
        with Path(path).open("rb") as f:
            yield from fileobj_chunks(f, offset, chunk_size)

    return chunks


def fileobj_chunks(f: BinaryIO, offset: int, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
    f.seek(offset)
    while block := f.read(chunk_size):
        yield block


@dataclass(frozen=True)
class InstallPlan:
    """What :meth:`Installer.plan` decided for one verified manifest."""

    manifest: Manifest
    manifest_bytes: bytes
    kind: Literal["full", "delta"]
    delta: DeltaInfo | None
    pending: PendingUpdate

    @property
    def download_length(self) -> int:
        return self.delta.patch_length if self.delta is not None else self.manifest.artifact_length


class Installer:
    def __init__(
        self,
        store: SlotStore,
        trust: DeviceTrust,
        *,
        on_progress: ProgressCallback | None = None,
        write_chunk: int = DEFAULT_CHUNK,
    ) -> None:
        self.store = store
        self.trust = trust
        self.on_progress = on_progress
        self.write_chunk = write_chunk

    def _device(self) -> DeviceTrust:
        # The store's counter is the authority (it is what survives power loss).
        return replace(self.trust, installed_counter=self.store.state.installed_counter)

    # -- steps ---------------------------------------------------------------------------------------

    def plan(
        self,
        manifest_bytes: bytes,
        *,
        now: datetime | None = None,
        allow_delta: bool = True,
        allow_full: bool = True,
    ) -> InstallPlan:
        """Verify the manifest and record the update as pending (or pick up the same one in progress)."""
        st = self.store.state
        if st.trial:
            raise InstallStateError("a trial is running: commit or revert it before installing another")
        try:
            manifest = verify_manifest(manifest_bytes, self._device(), now=now)
        except OtaError:
            if st.pending is not None and base64.b64decode(st.pending.manifest_b64) == manifest_bytes:
                self.store.abort_update("its manifest is no longer accepted")
            raise
        if st.is_refused(manifest.counter):
            raise RefusedReleaseError(
                f"{manifest.model} {manifest.version} (counter {manifest.counter}) was reverted here before"
            )
        check_slot_capacity(manifest, self.store.capacity)
        active = self.store.active_image()
        delta = select_patch(manifest, installed_sha256=active.sha256) if allow_delta else None
        # A pending update of the same release keeps its kind, so a resume continues what was started.
        p = st.pending
        if p is not None and p.sha256 == manifest.artifact_sha256 and p.kind == "full":
            delta = None
        if delta is None and not allow_full:
            raise InstallStateError(
                "the manifest offers no delta from the installed image: a full download is needed"
            )
        patch = (
            PatchSpec(sha256=delta.patch_sha256, length=delta.patch_length, base_sha256=delta.base_sha256)
            if delta is not None
            else None
        )
        pending = self.store.begin_update(
            kind="delta" if delta is not None else "full",
            manifest=manifest_bytes,
            sha256=manifest.artifact_sha256,
            length=manifest.artifact_length,
            counter=manifest.counter,
            patch=patch,
        )
        return InstallPlan(manifest, manifest_bytes, pending.kind, delta, pending)

    def download(self, plan: InstallPlan, source: ChunkSource) -> None:
        """Stream the artifact (full) or the patch (delta) into place, resuming from the durable offset."""
        pending = self.store.state.pending
        if pending is None or pending.phase != "downloading" or (plan.kind == "delta" and pending.patch_done):
            return
        try:
            if plan.delta is not None:
                with self.store.open_patch_writer() as writer:
                    self._pump(writer, source, "patch-download")
                    sha, length = writer.finish()
                verify_patch(plan.delta, sha256_hex=sha, length=length)
                self.store.mark_patch_done()
            else:
                with self.store.open_slot_writer() as writer:
                    self._pump(writer, source, "download")
                    writer.finish()
        except OtaError as exc:
            self.store.abort_update(f"download refused: {exc.code}")
            raise

    def verify(self, plan: InstallPlan) -> SlotImage:
        """Finish the slot's image (apply the patch for a delta) and verify it against the manifest."""
        pending = self.store.state.pending
        if pending is None:
            raise InstallStateError("no pending update to verify")
        if pending.phase == "verified":
            image = self.store.state.image(pending.slot)
            assert image is not None
            return image
        try:
            if plan.delta is not None:
                sha, length = self._write_patched(plan.manifest, plan.delta)
            else:
                progress = pending.progress
                sha, length = progress.prefix_sha256, progress.offset
            reached("installer.verify")
            verify_artifact(plan.manifest, sha256_hex=sha, length=length)
        except OtaError as exc:
            self.store.abort_update(f"verification refused: {exc.code}")
            raise
        return self.store.mark_verified(sha256=sha, length=length)

    def _write_patched(self, manifest: Manifest, delta: DeltaInfo) -> tuple[str, int]:
        pending = self.store.state.pending
        assert pending is not None
        if not pending.patch_done:
            raise InstallStateError("the patch has not been downloaded yet")
        patch = self.store.patch_path.read_bytes()
        # Re-checked here: the staging file may have changed since it was verified (power loss, flash).
        verify_patch(delta, sha256_hex=hashlib.sha256(patch).hexdigest(), length=len(patch))
        base = self.store.read_active()
        verify_patch_base(delta, base_sha256=hashlib.sha256(base).hexdigest())
        # ota.delta re-checks the base, bounds the decompression and checks the result before we write.
        result = apply_patch(
            base,
            patch,
            base_sha256=delta.base_sha256,
            result_sha256=manifest.artifact_sha256,
            result_length=manifest.artifact_length,
        )
        with self.store.open_slot_writer() as writer:
            self._pump(writer, bytes_source(result, self.write_chunk), "write")
            return writer.finish()

    def _pump(self, writer: ResumableWriter, source: ChunkSource, stage: str) -> None:
        total = writer.expected_length
        for chunk in source(writer.offset):
            writer.write(chunk)
            if self.on_progress is not None:
                self.on_progress(stage, writer.offset, total)

    def activate(self) -> None:
        """Atomically switch to the verified slot, on trial. The caller then restarts into boot()."""
        self.store.switch()

    def finish_trial(self, *, healthy: bool, reason: str = "health check failed") -> None:
        """Commit the running trial if its health check passed, else revert to the previous slot."""
        if healthy:
            self.store.commit()
        else:
            self.store.revert(reason)

    # -- whole flows ---------------------------------------------------------------------------------

    def install(
        self,
        manifest_bytes: bytes,
        *,
        artifact: ChunkSource | None = None,
        patch: ChunkSource | None = None,
        now: datetime | None = None,
    ) -> InstallPlan:
        """plan -> download -> verify -> switch. A delta is used when offered and ``patch`` is given."""
        if artifact is None and patch is None:
            raise ValueError("give an artifact source, a patch source, or both")
        plan = self.plan(
            manifest_bytes, now=now, allow_delta=patch is not None, allow_full=artifact is not None
        )
        return self._complete(plan, artifact=artifact, patch=patch)

    def resume(
        self,
        *,
        artifact: ChunkSource | None = None,
        patch: ChunkSource | None = None,
        now: datetime | None = None,
    ) -> InstallPlan | None:
        """Continue the persisted pending update after a restart (re-verifying its manifest first)."""
        pending = self.store.state.pending
        if pending is None:
            return None
        plan = self.plan(base64.b64decode(pending.manifest_b64), now=now, allow_delta=pending.kind == "delta")
        return self._complete(plan, artifact=artifact, patch=patch)

    def _complete(
        self, plan: InstallPlan, *, artifact: ChunkSource | None, patch: ChunkSource | None
    ) -> InstallPlan:
        source = patch if plan.kind == "delta" else artifact
        if source is None:
            raise ValueError(
                f"a {plan.kind} update needs its {'patch' if plan.kind == 'delta' else 'artifact'} source"
            )
        self.download(plan, source)
        self.verify(plan)
        self.activate()
        return plan
