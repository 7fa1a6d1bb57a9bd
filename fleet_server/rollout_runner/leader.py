"""Exactly one active runner across server processes: a PostgreSQL session advisory lock.

The lock is taken with ``pg_try_advisory_lock`` on a dedicated connection and held as long as that
connection lives; when the leading process dies (even SIGKILL) the server ends its session and the lock
is free for the next ``try`` of another process. Every check pings the connection, so a leader that lost
its connection stops leading before its next tick. On SQLite (one process by construction) the runner
always leads.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)


class LeaderLock:
    def __init__(self, engine: Engine, key: int) -> None:
        self.engine = engine
        self.key = key
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.always = engine.dialect.name != "postgresql"

    @property
    def held(self) -> bool:
        return self.always or self._conn is not None

    def check(self) -> bool:
        """True when this process leads (taking the lock if it is free)."""
        if self.always:
            return True
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute(text("SELECT 1"))
                    return True
                except Exception as exc:  # the session (and with it the lock) is gone
                    log.warning("rollout runner: leader connection lost (%s); no longer leading", exc)
                    self._drop()
                    return False
            conn = None
            try:
                conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
            except Exception as exc:
                log.warning("rollout runner: cannot try the leader lock: %s", exc)
                if conn is not None:
                    conn.invalidate()
                    conn.close()
                return False
            if not got:
                conn.close()
                return False
            self._conn = conn
            log.info("rollout runner: leading (advisory lock %d)", self.key)
            return True

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def release(self) -> None:
        with self._lock:
            if self._conn is None:
                return
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.close()
            except Exception:
                self._drop()
            self._conn = None
