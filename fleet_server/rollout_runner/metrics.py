"""Prometheus figures of the rollout runner, on the API's registry (``app.state.metrics.registry``, what
GET /metrics serves): rollouts by status, whether this process leads, the last tick's duration, and
decisions / commands by kind. Updated by ``RolloutRunner.tick``; the counts by status come from the
``rollouts`` table on every tick (leader or not), so every API replica shows the same states.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from fleet_server.db.rollouts import ROLLOUT_STATUSES

_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, RolloutMetrics] = weakref.WeakKeyDictionary()


class RolloutMetrics:
    @classmethod
    def on(cls, registry: CollectorRegistry) -> RolloutMetrics:
        """The registry's instance (an app's lifespan may run more than once; a metric name can be
        registered only once per registry)."""
        found = _BY_REGISTRY.get(registry)
        if found is None:
            found = _BY_REGISTRY[registry] = cls(registry)
        return found

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rollouts = Gauge(
            "tinyfleet_rollouts",
            "Rollouts by status (running, paused, rolled_back, aborted, completed), as of the last tick.",
            ["status"],
            registry=registry,
        )
        self.unfinished = Gauge(
            "tinyfleet_rollouts_unfinished",
            "Rollouts the runner still decides on each tick (not finished).",
            registry=registry,
        )
        self.leading = Gauge(
            "tinyfleet_rollout_runner_leading",
            "1 when this process holds the runner's leader lock and decides; 0 when it stands by.",
            registry=registry,
        )
        self.tick_seconds = Gauge(
            "tinyfleet_rollout_runner_last_tick_seconds",
            "Duration of the last runner tick (every unfinished rollout decided, outbox drained).",
            registry=registry,
        )
        self.tick_errors = Counter(
            "tinyfleet_rollout_runner_tick_errors",
            "Rollout ticks that failed (logged; retried on the next tick).",
            registry=registry,
        )
        self.decisions = Counter(
            "tinyfleet_rollout_decisions",
            "Stored rollout decisions by action (hold, advance, pause, rollback, complete, ...).",
            ["action"],
            registry=registry,
        )
        self.commands = Counter(
            "tinyfleet_rollout_commands",
            "Device commands decided by the runner, by kind (update, revert, retarget, shadow_on/off).",
            ["kind"],
            registry=registry,
        )
        for status in ROLLOUT_STATUSES:  # every state shows, 0 included, before the first tick
            self.rollouts.labels(status).set(0)

    def observe_tick(
        self,
        *,
        leading: bool,
        seconds: float,
        by_status: Mapping[str, int],
        unfinished: int,
        errors: int = 0,
    ) -> None:
        self.leading.set(1 if leading else 0)
        self.tick_seconds.set(seconds)
        for status in {*ROLLOUT_STATUSES, *by_status}:
            self.rollouts.labels(status).set(by_status.get(status, 0))
        self.unfinished.set(unfinished)
        if errors:
            self.tick_errors.inc(errors)

    def observe_decisions(self, actions: Iterable[str], command_kinds: Mapping[str, int]) -> None:
        for action in actions:
            self.decisions.labels(action).inc()
        for kind, n in command_kinds.items():
            if n:
                self.commands.labels(kind).inc(n)
