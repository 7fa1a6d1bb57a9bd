"""A write into a slot (or the patch staging file) that survives power loss and resumes from an offset.

Chunks are written at the current offset and hashed as they arrive. Every ``checkpoint_bytes`` the
file is fsynced and only then the new offset, with the sha256 of the bytes before it, is persisted
by the caller's ``persist`` callback (the store's state record). On resume the file is cut back to
the persisted offset (anything after it was never promised durable) and the prefix is re-hashed; if
it does not match the recorded prefix hash the write starts again from byte 0.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from ota.atomic_io import HASH_BLOCK
from ota.crashpoints import reached
from ota.errors import LengthMismatchError
from ota.slot_state import WriteProgress


class ResumableWriter:
    def __init__(
        self,
        path: Path,
        *,
        progress: WriteProgress,
        expected_length: int,
        checkpoint_bytes: int,
        persist: Callable[[WriteProgress], None],
    ) -> None:
        self.path = path
        self.expected_length = expected_length
        self._checkpoint_bytes = max(1, checkpoint_bytes)
        self._persist = persist
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._hasher = hashlib.sha256()
        self.resumed_from = self._resume(progress)
        self.offset = self.resumed_from
        self._durable = self.offset

    def _resume(self, progress: WriteProgress) -> int:
        """Re-hash the durable prefix; return the offset to continue from (0 if it does not match)."""
        hasher = hashlib.sha256()
        count = 0
        if 0 < progress.offset <= self.expected_length:
            while count < progress.offset:
                block = os.pread(self._fd, min(HASH_BLOCK, progress.offset - count), count)
                if not block:
                    break
                hasher.update(block)
                count += len(block)
        if count == progress.offset and hasher.hexdigest() == progress.prefix_sha256:
            self._hasher = hasher
            offset = progress.offset
        else:
            offset = 0
        os.ftruncate(self._fd, offset)
        return offset

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self.offset + len(chunk) > self.expected_length:
            raise LengthMismatchError(
                f"source sent more than the expected {self.expected_length} bytes"
                f" (at least {self.offset + len(chunk)}); nothing past that was written"
            )
        view = memoryview(chunk)
        position = self.offset
        while view:
            written = os.pwrite(self._fd, view, position)
            view = view[written:]
            position += written
        reached("write.chunk")
        self._hasher.update(chunk)
        self.offset += len(chunk)
        if self.offset - self._durable >= self._checkpoint_bytes:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make the bytes so far durable, then record the offset (in that order)."""
        os.fsync(self._fd)
        reached("write.fsynced")
        self._persist(WriteProgress(offset=self.offset, prefix_sha256=self._hasher.hexdigest()))
        self._durable = self.offset

    def finish(self) -> tuple[str, int]:
        """Checkpoint what was written; return its sha256 hex and length (the caller verifies them)."""
        if self.offset != self._durable:
            self.checkpoint()
        else:
            os.fsync(self._fd)
        return self._hasher.hexdigest(), self.offset

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResumableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
