"""Run ``evaluate_all`` every ``Settings.drift_eval_interval_s`` in a daemon thread.

Started by whoever runs the server process (``DriftScheduler(session_factory, settings).start()``, and
``stop()`` at shutdown). An evaluation that fails is logged and retried at the next tick; the thread
never dies on it. Several server processes may each run one: alerts deduplicate, webhook deliveries are
leased (fleet_server.drift.webhook), and the snapshots of a doubled evaluation are harmless.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

from fleet_server.db.base import utcnow
from fleet_server.drift.evaluator import EvaluationSummary, evaluate_all
from fleet_server.settings import Settings

log = logging.getLogger(__name__)


class DriftScheduler:
    def __init__(self, session_factory: Callable[[], Session], settings: Settings) -> None:
        self._session_factory = session_factory
        self._settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_summary: EvaluationSummary | None = None
        self.last_error: str | None = None
        self.runs = 0

    def run_once(self) -> EvaluationSummary | None:
        try:
            with self._session_factory() as session:
                self.last_summary = evaluate_all(session, self._settings, utcnow())
            self.last_error = None
        except Exception as exc:  # a bad evaluation must not end the loop
            log.exception("drift evaluation failed")
            self.last_error = f"{type(exc).__name__}: {exc}"
        self.runs += 1
        return self.last_summary

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self._settings.drift_eval_interval_s)

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="drift-evaluator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
