"""Crash-safe file primitives: atomic replace (temp, fsync, rename, fsync directory) and helpers.

A reader of a path written with :func:`atomic_write` sees either the old complete content or the
new complete content, never a mixture, even after a power cut: the new bytes are durable (fsync)
before the rename publishes them, and the directory entry is durable (fsync of the directory)
before the caller goes on.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ota.crashpoints import reached

HASH_BLOCK = 1024 * 1024


def fsync_dir(directory: Path) -> None:
    """Make renames, creations and deletions inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically and durably."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        reached("atomic.written")
        os.fsync(fd)
    finally:
        os.close(fd)
    reached("atomic.fsynced")
    os.replace(tmp, path)
    reached("atomic.renamed")
    fsync_dir(path.parent)
    reached("atomic.dir_fsynced")


def remove_durably(path: Path) -> None:
    """Delete ``path`` if present and make the deletion durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    reached("remove.unlinked")
    fsync_dir(path.parent)


def sha256_of_file(path: Path, length: int | None = None) -> tuple[str, int]:
    """sha256 hex and byte count of the first ``length`` bytes of ``path`` (all of it if ``None``).

    Returns fewer bytes than asked if the file is shorter; callers compare the count.
    """
    digest = hashlib.sha256()
    count = 0
    with path.open("rb") as f:
        while length is None or count < length:
            want = HASH_BLOCK if length is None else min(HASH_BLOCK, length - count)
            block = f.read(want)
            if not block:
                break
            digest.update(block)
            count += len(block)
    return digest.hexdigest(), count
