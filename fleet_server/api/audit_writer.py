"""Audit rows written by one dedicated thread, in batches, off the event loop.

Requests hand their entry to :meth:`AuditWriter.write` *after* their response went out and await its
commit: the client is not delayed, the event loop never blocks on the database, and no audit write
takes one of AnyIO's 40 worker threads (which the sync routes need). Under a burst (e.g. a flood of
refusals) the thread commits many rows per transaction. The queue is bounded by the requests in
flight, since each one waits for its own row. :meth:`AuditWriter.close` (app shutdown) drains the
queue and writes the aggregated rows of the anonymous-flood limiter, so nothing accepted is lost.
The thread starts on the first write and ends after a few idle seconds (tests build many apps).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from anyio import to_thread
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fleet_server import audit
from fleet_server.audit_flood import AnonymousFloodLimiter

log = logging.getLogger("tinyfleet.audit")

_STOP = object()
_Item = tuple[dict[str, Any], asyncio.AbstractEventLoop | None, "asyncio.Future[None] | None"]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AuditWriter:
    def __init__(
        self,
        session_factory: Callable[[], Session],
        limiter: AnonymousFloodLimiter | None = None,
        *,
        batch_max: int = 500,
        tick_s: float = 1.0,
        idle_exit_s: float = 5.0,
    ) -> None:
        self._session_factory = session_factory
        self.limiter = limiter
        self._batch_max = batch_max
        self._tick_s = tick_s
        self._idle_exit_s = idle_exit_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.rows_written = 0  # for tests and diagnostics

    # ---------------------------------------------------------------- producers (event loop)

    async def write(self, entry: dict[str, Any]) -> None:
        """Queue one entry (``audit.record`` keyword arguments) and wait until it is committed.

        Anonymous refusals beyond the per-IP-and-minute limit are only counted (one aggregated row
        per window); everything else gets its own row."""
        limited = self.limiter is not None and entry["actor_kind"] == "anonymous"
        if limited and entry["status_code"] >= 400 and not self._admit(entry):
            self._ensure_thread()  # it writes the aggregate when the window closes
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((entry, loop, future))
        self._ensure_thread()
        # Shielded: a client that disconnects does not cancel the write (it is queued anyway).
        await asyncio.shield(future)

    def _admit(self, entry: dict[str, Any]) -> bool:
        assert self.limiter is not None
        return self.limiter.admit(entry["client_ip"], entry["status_code"], entry["action"])

    def write_nowait(self, entry: dict[str, Any]) -> None:
        """Queue an entry without waiting (callers outside an event loop)."""
        self._queue.put((entry, None, None))
        self._ensure_thread()

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until everything queued so far is committed (and closed flood windows written)."""
        done = threading.Event()
        self._queue.put(done)
        self._ensure_thread()
        if not done.wait(timeout_s):
            raise TimeoutError("audit writer did not flush in time")

    def close(self, timeout_s: float = 30.0) -> None:
        """Drain the queue, write every open flood window's aggregate, stop the thread."""
        with self._lock:
            thread = self._thread
        if thread is None:
            if self.limiter is not None and self.limiter.has_open_windows():
                self._commit([], self.limiter.closed_aggregates(all_windows=True))
            return
        self._queue.put(_STOP)
        thread.join(timeout_s)

    async def aclose(self) -> None:
        await to_thread.run_sync(self.close)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tinyfleet-audit-writer", daemon=True)
                self._thread.start()

    # ---------------------------------------------------------------- the writer thread

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            batch: list[Any] = []
            try:
                batch.append(self._queue.get(timeout=self._tick_s))
                while len(batch) < self._batch_max:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            stopping = any(item is _STOP for item in batch)
            items: list[_Item] = [i for i in batch if isinstance(i, tuple)]
            flushes = [i for i in batch if isinstance(i, threading.Event)]
            aggregates = self.limiter.closed_aggregates(all_windows=stopping) if self.limiter else []
            if items or aggregates:
                self._commit([entry for entry, _, _ in items], aggregates)
                idle_since = time.monotonic()
            for _, loop, future in items:
                if loop is not None and future is not None:
                    # RuntimeError: that event loop is gone (e.g. a finished test client).
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(_resolve, future)
            for event in flushes:
                event.set()
            if stopping:
                with self._lock:
                    self._thread = None
                return
            if not batch and time.monotonic() - idle_since > self._idle_exit_s:
                with self._lock:
                    open_windows = self.limiter is not None and self.limiter.has_open_windows()
                    if self._queue.empty() and not open_windows:
                        self._thread = None
                        return

    def _commit(self, entries: list[dict[str, Any]], aggregates: list[dict[str, Any]]) -> None:
        rows = entries + aggregates
        try:
            with self._session_factory() as session:
                for row in rows:
                    audit.record(session, **row)
                session.commit()
            self.rows_written += len(rows)
            return
        except SQLAlchemyError:
            log.warning("audit batch of %d rows failed; retrying row by row", len(rows), exc_info=True)
        for row in rows:  # one bad row must not take the others with it
            try:
                with self._session_factory() as session:
                    audit.record(session, **row)
                    session.commit()
                self.rows_written += 1
            except SQLAlchemyError:
                # The response already went out; losing the row is logged loudly rather than hidden.
                log.exception("could not write audit entry for %s %s", row["action"], row["target"])
