"""Simulated flash: a directory with a byte budget, standing in for a board's model/state storage.

The budget is two OTA slots plus a reserve for state (slot records, telemetry buffer):
``2 * profile.model_flash_budget_bytes + state_bytes``. Writers ask :meth:`FlashArea.ensure_room`
before they grow a file (or use :meth:`write_bytes` / :meth:`append_bytes`, which do); a write that
does not fit is refused with :class:`FlashFullError`, an ``OSError`` with ``errno.ENOSPC`` -- the same
error a real full disk gives, so code that survives one survives the other. ``set_full(True)``
makes every growing write fail, for full-disk tests. Nothing already stored is touched by a refusal.

The budget cannot police writers that bypass these calls (it is a plain directory, not a file
system); :meth:`used_bytes` / :meth:`check_budget` let a test verify after the fact.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from firmware_stubs.hardware_profiles import HardwareProfile

DEFAULT_STATE_BYTES = 64 * 1024


class FlashFullError(OSError):
    """No room left in the simulated flash (errno ENOSPC)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


class FlashArea:
    """A directory with a byte budget. ``root`` is created if missing."""

    def __init__(self, root: Path | str, budget_bytes: int) -> None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes <= 0:
            raise ValueError(f"flash budget must be a positive number of bytes, got {budget_bytes!r}")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"flash root {self.root} exists and is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self._full = False
        used = self.used_bytes()
        if used > budget_bytes:
            raise ValueError(
                f"flash root {self.root} already holds {used} bytes, more than the budget of "
                f"{budget_bytes} bytes; use another directory or a larger budget"
            )

    @classmethod
    def for_profile(
        cls, profile: HardwareProfile, root: Path | str, *, state_bytes: int = DEFAULT_STATE_BYTES
    ) -> FlashArea:
        """Two model slots of ``profile.model_flash_budget_bytes`` plus ``state_bytes``."""
        if isinstance(state_bytes, bool) or not isinstance(state_bytes, int) or state_bytes < 0:
            raise ValueError(f"state_bytes must be a non-negative number of bytes, got {state_bytes!r}")
        budget = 2 * profile.model_flash_budget_bytes + state_bytes
        if budget > profile.flash_bytes:
            raise ValueError(
                f"{profile.name}: two slots plus {state_bytes} state bytes = {budget} bytes "
                f"exceed the board's {profile.flash_bytes} bytes of flash"
            )
        return cls(root, budget)

    # -- accounting ------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        """Logical size of every regular file under ``root``."""
        total = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:  # removed while we walked
                    continue
                total += st.st_size
        return total

    def free_bytes(self) -> int:
        return 0 if self._full else max(0, self.budget_bytes - self.used_bytes())

    @property
    def full(self) -> bool:
        return self._full

    def set_full(self, full: bool = True) -> None:
        """Simulate a full disk: every growing write fails until ``set_full(False)``."""
        self._full = bool(full)

    def ensure_room(self, n_bytes: int, *, replacing: Path | str | None = None) -> None:
        """Raise :class:`FlashFullError` unless ``n_bytes`` more bytes fit.

        ``replacing``: a file being overwritten in place (its current size is freed first). An atomic
        replace (temp file + rename) holds old and new at once, so it needs the whole ``n_bytes``.
        """
        if isinstance(n_bytes, bool) or not isinstance(n_bytes, int) or n_bytes < 0:
            raise ValueError(f"byte count must be a non-negative integer, got {n_bytes!r}")
        freed = 0
        if replacing is not None:
            target = self._resolve(replacing)
            freed = target.stat().st_size if target.is_file() else 0
        growth = n_bytes - freed
        if self._full and n_bytes > 0:
            raise FlashFullError(
                f"flash area {self.root} is full (simulated full disk): cannot write {n_bytes} bytes"
            )
        if growth <= 0:
            return
        free = self.budget_bytes - self.used_bytes()
        if growth > free:
            raise FlashFullError(
                f"flash area {self.root}: writing {n_bytes} bytes needs {growth} more "
                f"but only {max(free, 0)} of {self.budget_bytes} bytes are free"
            )

    def check_budget(self) -> None:
        """Raise :class:`FlashFullError` if the directory already holds more than the budget."""
        used = self.used_bytes()
        if used > self.budget_bytes:
            raise FlashFullError(
                f"flash area {self.root} holds {used} bytes, over its budget of {self.budget_bytes} bytes"
            )

    # -- budgeted writes -------------------------------------------------------------------------

    def _resolve(self, path: Path | str) -> Path:
        """A path relative to the root, or an absolute one inside it; never outside."""
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.relative_to(self.root.absolute())
            except ValueError:
                raise ValueError(f"{p} is outside the flash area {self.root}") from None
        if not p.parts or ".." in p.parts:
            raise ValueError(f"flash paths name a file under the flash root without '..', got {str(path)!r}")
        return self.root / p

    def write_bytes(self, relpath: Path | str, data: bytes) -> Path:
        """Replace ``relpath`` by ``data`` atomically (temp file, fsync, rename) if it fits."""
        target = self._resolve(relpath)
        payload = bytes(data)
        self.ensure_room(len(payload))  # old and new coexist until the rename
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".flash-tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def append_bytes(self, relpath: Path | str, data: bytes) -> Path:
        """Append ``data`` to ``relpath`` (created if missing) if it fits; durable on return."""
        target = self._resolve(relpath)
        payload = bytes(data)
        self.ensure_room(len(payload))
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "ab") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        return target

    def read_bytes(self, relpath: Path | str) -> bytes:
        return self._resolve(relpath).read_bytes()
