"""Named fault-injection points on the slot store's durable-write path.

Every fsync, rename and chunk write of the slot store calls :func:`reached` with a label. In
production no hook is set and the call costs one global lookup. The power-loss test installs a hook
that SIGKILLs its own process at the N-th point, so a crash can be placed between any two durable
steps (see tests/ota/_power_loss_child.py).
"""

from __future__ import annotations

from collections.abc import Callable

_hook: Callable[[str], None] | None = None


def set_hook(hook: Callable[[str], None] | None) -> None:
    """Install (or with ``None`` remove) the process-wide crash-point hook."""
    global _hook
    _hook = hook


def reached(label: str) -> None:
    """Mark a point between two durable steps; the hook, if any, may kill the process here."""
    if _hook is not None:
        _hook(label)
