"""Bounding the audit rows an anonymous flood can cause (e.g. 10,000 bad-token requests a minute).

Refusals of *anonymous* callers are counted per client IP and wall-clock minute: the first ``limit``
of each window become ordinary audit rows, the rest only raise a counter, and when the window has
closed one aggregated row records how many were left out. Authenticated actors are never limited
(every row of theirs is written). Plain Python with an injectable clock; thread-safe because the event
loop admits entries while the audit writer thread collects the closed windows.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 60
SUPPRESSED_ACTION = "audit.anonymous_refusals_suppressed"
# Distinct client IPs tracked per window; beyond that they share one bucket (bounds memory too).
MAX_KEYS_PER_WINDOW = 10_000
OVERFLOW_KEY = "*"


@dataclass
class _Window:
    admitted: int = 0
    suppressed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)


class AnonymousFloodLimiter:
    def __init__(self, limit: int, *, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[int, dict[str, _Window]] = {}

    def admit(self, client_ip: str | None, status_code: int, action: str) -> bool:
        """True: write this anonymous refusal as its own row. False: it was counted into an aggregate."""
        minute = int(self._clock() // WINDOW_S)
        key = client_ip or "unknown"
        with self._lock:
            by_ip = self._windows.setdefault(minute, {})
            if key not in by_ip and len(by_ip) >= MAX_KEYS_PER_WINDOW:
                key = OVERFLOW_KEY
            window = by_ip.setdefault(key, _Window())
            if window.admitted < self.limit:
                window.admitted += 1
                return True
            window.suppressed += 1
            window.statuses[status_code] = window.statuses.get(status_code, 0) + 1
            if len(window.actions) < 20 or action in window.actions:
                window.actions[action] = window.actions.get(action, 0) + 1
            return False

    def has_open_windows(self) -> bool:
        with self._lock:
            return bool(self._windows)

    def closed_aggregates(self, *, all_windows: bool = False) -> list[dict[str, Any]]:
        """Audit entries (``fleet_server.audit.record`` keyword arguments) for windows that ended, or for
        every window with ``all_windows`` (shutdown). Those windows are forgotten."""
        current = int(self._clock() // WINDOW_S)
        with self._lock:
            done = [m for m in self._windows if all_windows or m < current]
            popped = [(m, self._windows.pop(m)) for m in sorted(done)]
        entries = []
        for minute, by_ip in popped:
            start = dt.datetime.fromtimestamp(minute * WINDOW_S, dt.UTC)
            for ip, window in by_ip.items():
                if window.suppressed == 0:
                    continue
                entries.append(
                    {
                        "actor": "anonymous",
                        "actor_kind": "anonymous",
                        "action": SUPPRESSED_ACTION,
                        "target": None,
                        "client_ip": None if ip in ("unknown", OVERFLOW_KEY) else ip,
                        "outcome": "denied",
                        "status_code": max(window.statuses, key=lambda s: window.statuses[s]),
                        "details": {
                            "suppressed": window.suppressed,
                            "written": window.admitted,
                            "window_start": start.isoformat(),
                            "window_seconds": WINDOW_S,
                            "statuses": {str(k): v for k, v in sorted(window.statuses.items())},
                            "actions": dict(sorted(window.actions.items(), key=lambda kv: -kv[1])),
                            "many_ips": ip == OVERFLOW_KEY,
                        },
                    }
                )
        return entries
