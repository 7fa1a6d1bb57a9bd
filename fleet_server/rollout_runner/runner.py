"""The rollout runner: each tick, for every unfinished rollout, load → decide → store → publish.

One tick of one rollout, in ONE transaction: read the row (state + revision), load the fleet and the
stage's per-device totals from the DB, call ``controller.decide``, raise alerts, and write the new state,
the decisions and the outbox rows (guarded by the revision). After the commit the outbox is drained to
MQTT (QoS 1) and rows are marked sent. A crash anywhere leaves either the old state (nothing decided) or
the new state with its commands in the outbox (published on the next drain, by whichever runner leads).

Only the leader ticks (``LeaderLock``: PostgreSQL advisory lock; SQLite: always). The clock is injectable
(``now``): the demo runs simulated time.

Rollouts that are running, paused or completed are decided each tick (a completed rollout still
releases its held-back control group); a rolled-back one is watched until every exposed device reports
a version other than the candidate (time to recovery is recorded in its summary); aborted ones are done.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from fleet_server.alert_store import raise_alert
from fleet_server.db.base import utcnow
from fleet_server.db.releases import Release
from fleet_server.db.rollouts import RolloutRow
from fleet_server.rollout_runner.baselines import BaselineCache
from fleet_server.rollout_runner.command_builder import CommandBuilder
from fleet_server.rollout_runner.fleet_loader import LoadedFleet, PointsCache, load_fleet
from fleet_server.rollout_runner.leader import LeaderLock
from fleet_server.rollout_runner.metrics import RolloutMetrics
from fleet_server.rollout_runner.publisher import CommandPublisher, DrainResult, publish_outbox
from fleet_server.rollout_runner.service import StaleRollout, running_counters, save_outcome, state_of
from fleet_server.rollout_runner.totals_query import load_totals
from fleet_server.rollouts import controller
from fleet_server.rollouts.alerts import GroupFigures, evaluate_alerts
from fleet_server.rollouts.model import Outcome, RolloutState
from fleet_server.rollouts.totals import DeviceTotals

log = logging.getLogger(__name__)


class CounterMap(Mapping[str, int | None]):
    """Device id -> running counter, backed by the loaded fleet's arrays (no 100k-entry dict)."""

    def __init__(self, loaded: LoadedFleet) -> None:
        self._index = loaded.fleet.index()
        self._values = loaded.running_counter

    def __getitem__(self, key: str) -> int | None:
        v = int(self._values[self._index[key]])
        return None if v < 0 else v

    def get(self, key: str, default: Any = None) -> Any:
        i = self._index.get(key)
        if i is None:
            return default
        v = int(self._values[i])
        return None if v < 0 else v

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


class ClassMap(Mapping[str, str]):
    """Device id -> hardware class, backed by the loaded fleet."""

    def __init__(self, loaded: LoadedFleet) -> None:
        self._index = loaded.fleet.index()
        self._values = loaded.fleet.hardware_class

    def __getitem__(self, key: str) -> str:
        return str(self._values[self._index[key]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


@dataclass
class TickReport:
    rollouts: int = 0
    decisions: int = 0
    commands: int = 0
    stale: int = 0
    errors: int = 0
    drained: DrainResult = field(default_factory=DrainResult)
    leading: bool = True


@dataclass
class RolloutRunner:
    engine: Engine
    builder: CommandBuilder
    publisher: CommandPublisher | None
    baselines: BaselineCache
    leader: LeaderLock
    now: Callable[[], float] = time.time
    tick_s: float = 5.0
    battery_lookback_s: int = 1800
    # Test hook: called after a rollout's transaction committed, before the outbox is drained.
    after_commit: Callable[[str], None] | None = None
    metrics: RolloutMetrics | None = None  # Prometheus figures on the API's registry (metrics.py)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        self.points = PointsCache()

    # ------------------------------------------------------------------ one tick

    def tick(self) -> TickReport:
        started = time.perf_counter()
        report = self._tick()
        if self.metrics is not None:
            try:
                self._observe(report, time.perf_counter() - started)
            except Exception:
                log.exception("rollout runner: updating the metrics failed")
        return report

    def _observe(self, report: TickReport, seconds: float) -> None:
        assert self.metrics is not None
        with self.engine.connect() as conn:
            counts = conn.execute(
                select(RolloutRow.status, RolloutRow.finished, func.count()).group_by(
                    RolloutRow.status, RolloutRow.finished
                )
            ).all()
        by_status: dict[str, int] = {}
        for status, _finished, n in counts:
            by_status[status] = by_status.get(status, 0) + int(n)
        self.metrics.observe_tick(
            leading=report.leading,
            seconds=seconds,
            by_status=by_status,
            unfinished=sum(int(n) for _s, finished, n in counts if not finished),
            errors=report.errors,
        )

    def _tick(self) -> TickReport:
        report = TickReport()
        if not self.leader.check():
            report.leading = False
            return report
        with self.engine.connect() as conn:
            ids = list(
                conn.execute(
                    select(RolloutRow.id)
                    .where(RolloutRow.finished.is_(False))
                    .order_by(RolloutRow.created_at)
                ).scalars()
            )
        for rollout_id in ids:
            report.rollouts += 1
            try:
                decisions, commands = self.tick_rollout(rollout_id)
                report.decisions += decisions
                report.commands += commands
            except StaleRollout:
                report.stale += 1  # an operator acted meanwhile: decide again on the next tick
            except Exception:
                report.errors += 1
                log.exception("rollout runner: tick of %s failed", rollout_id)
            if self.after_commit is not None:
                self.after_commit(rollout_id)
        report.drained = self.drain()
        return report

    def drain(self) -> DrainResult:
        if self.publisher is None:
            return DrainResult()
        try:
            return publish_outbox(self.engine, self.publisher, self.now())
        except Exception:
            log.exception("rollout runner: publishing the outbox failed; retrying next tick")
            return DrainResult(failed=1)

    def tick_rollout(self, rollout_id: str) -> tuple[int, int]:
        """Decide one rollout and store the outcome (one transaction). Returns (decisions, commands)."""
        now = self.now()
        with self.sessions() as session, session.begin():
            row = session.get(RolloutRow, rollout_id)
            if row is None or row.finished:
                return 0, 0
            revision = row.revision
            state = state_of(row)
            if state.status == "aborted":
                save_outcome(
                    session,
                    row,
                    Outcome(state=state),
                    expected_revision=revision,
                    builder=None,
                    running_counter={},
                    now=now,
                    finished=True,
                )
                return 0, 0
            if state.status == "rolled_back":
                return self._watch_recovery(session, row, state, revision, now)
            release = session.get(Release, row.release_id)
            if release is None:
                raise LookupError(f"release {row.release_id} of rollout {rollout_id} is gone")
            spec = state.spec
            conn = session.connection()
            loaded = load_fleet(
                conn,
                rollout_id,
                spec.target,
                spec.release.model,
                battery_since=int(now) - self.battery_lookback_s,
                points=self.points,
            )
            baseline = self.baselines.get(session, release)
            # The gates (and the summary) look at the cohort and the control group only: the other
            # devices' windows are not aggregated (half of them at the 50 % stage).
            g = controller.groups(state, loaded.fleet)
            totals = load_totals(
                conn,
                loaded.fleet,
                model_name=spec.release.model,
                since=state.stage_started_at,
                exposed=state.exposed,
                candidate_counter=spec.release.counter,
                previous_counter=spec.release.previous_counter,
                release_id=spec.release.release_id,
                baseline_bins={f: len(h) for f, h in baseline.items()} if baseline else None,
                devices=g.commanded | g.control,
            )
            outcome = controller.decide(state, loaded.fleet, totals, now, baseline)
            summary, pending = _summary(outcome.state, loaded, totals, now)
            finished = outcome.state.status == "completed" and pending == 0 and not outcome.commands
            if outcome.state.status == "aborted":
                finished = True
            commands = save_outcome(
                session,
                row,
                outcome,
                expected_revision=revision,
                builder=self.builder,
                running_counter=CounterMap(loaded),
                now=now,
                summary=summary,
                finished=finished,
                device_class=ClassMap(loaded),
            )
            self._alerts(session, outcome.state, loaded, totals, baseline, now, outcome)
        if self.metrics is not None:  # committed: count what was decided
            self.metrics.observe_decisions(
                [d.action for d in outcome.decisions], collections.Counter(c.kind for c in commands)
            )
        return len(outcome.decisions), len(commands)

    def _watch_recovery(
        self, session: Session, row: RolloutRow, state: RolloutState, revision: int, now: float
    ) -> tuple[int, int]:
        counters = running_counters(session, state.spec.release.model, state.exposed)
        exposure = controller.exposure_report(state, counters)
        summary = dict(row.summary or {})
        summary.update(
            still_on_candidate=len(exposure.still_on_candidate),
            unknown=len(exposure.unknown),
            reverted=exposure.reverted,
            evaluated_at=now,
        )
        finished = exposure.recovered
        if finished and state.rolled_back_at is not None:
            summary["recovered_at"] = now
            summary["time_to_recovery_s"] = now - state.rolled_back_at
        if summary != row.summary:
            save_outcome(
                session,
                row,
                Outcome(state=state),
                expected_revision=revision,
                builder=None,
                running_counter={},
                now=now,
                summary=summary,
                finished=finished,
            )
        return 0, 0

    def _alerts(
        self,
        session: Session,
        state: RolloutState,
        loaded: LoadedFleet,
        totals: DeviceTotals,
        baseline: Mapping[int, list[float]] | None,
        now: float,
        outcome: Outcome,
    ) -> None:
        g = controller.groups(state, loaded.fleet)
        if not g.commanded.any():
            return
        rel = state.spec.release
        cohort = f"{state.spec.rollout_id}:{state.stage.name}"[:64]
        report = evaluate_alerts(
            rel.model,
            rel.version,
            cohort,
            GroupFigures.of(totals, g.commanded),
            now,
            reference=GroupFigures.of(totals, g.control) if g.control.any() else None,
            baseline=baseline,
        )
        stamp = utcnow()
        for a in report.alerts:
            feature = a.evidence.get("feature")
            key = f"rollout:{state.spec.rollout_id}:{a.code}" + (f":{feature}" if feature is not None else "")
            raise_alert(
                session,
                severity=a.severity,
                code=a.code,
                title=a.title,
                dedup_key=key,
                evidence=_jsonable(a.evidence),
                model_name=rel.model,
                model_version=rel.version,
                cohort=cohort,
                rollout_id=state.spec.rollout_id,
                now=stamp,
            )
        for d in outcome.decisions:
            if d.action == "rollback" and d.actor == controller.CONTROLLER:
                raise_alert(
                    session,
                    severity="P1",
                    code="rollout_rolled_back",
                    title=f"rollout {state.spec.rollout_id} rolled back: {d.reason}",
                    dedup_key=f"rollout:{state.spec.rollout_id}:rolled_back",
                    evidence={
                        "reason": d.reason,
                        "counts": d.counts,
                        "gates": [r.model_dump(mode="json") for r in d.gate_results],
                    },
                    model_name=rel.model,
                    model_version=rel.version,
                    cohort=cohort,
                    rollout_id=state.spec.rollout_id,
                    now=stamp,
                )

    # ------------------------------------------------------------------ background thread

    def run(self, stop: threading.Event | None = None) -> None:
        """Tick every ``tick_s`` until ``stop`` (or :meth:`stop`) is set."""
        stop = stop or self._stop
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("rollout runner: tick failed")
            stop.wait(self.tick_s)
        self.leader.release()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="rollout-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        close = getattr(self.publisher, "close", None)
        if close is not None:
            close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _summary(state: RolloutState, loaded: LoadedFleet, totals: DeviceTotals, now: float) -> tuple[dict, int]:
    fleet = loaded.fleet
    g = controller.groups(state, fleet)
    reporting = g.commanded & (totals.inferences > 0)
    pending = g.target & ~g.commanded & ~fleet.mask_of(state.reverted)
    summary = {
        "evaluated_at": now,
        "registered": fleet.size,
        "eligible": int(fleet.eligible.sum()),
        "control": int(g.control.sum()),
        "control_reporting": int((g.control & (totals.inferences > 0)).sum()),
        "target": int(g.target.sum()),
        "commanded": int(g.commanded.sum()),
        "reporting": int(reporting.sum()),
        "pending": int(pending.sum()),
        "exposed": len(state.exposed),
        "shadowed": len(state.shadowed),
        "reverted": len(state.reverted),
    }
    return summary, summary["pending"]


def build_runner(
    settings: Any,
    engine: Engine,
    *,
    publisher: CommandPublisher | None = None,
    now: Callable[[], float] = time.time,
    builder: CommandBuilder | None = None,
    metrics: RolloutMetrics | None = None,
) -> RolloutRunner:
    """A runner wired from Settings (MQTT broker, base URL, lock key, tick); ``metrics``: on the API's
    Prometheus registry (``RolloutMetrics(app.state.metrics.registry)``)."""
    from fleet_server.rollout_runner.publisher import BrokerAddress, MqttCommandPublisher

    if publisher is None:
        password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
        publisher = MqttCommandPublisher(
            BrokerAddress(settings.mqtt_host, settings.mqtt_port, settings.mqtt_username, password),
            timeout_s=settings.rollout_publish_timeout_s,
        )
    return RolloutRunner(
        engine=engine,
        builder=builder or command_builder(settings),
        publisher=publisher,
        baselines=BaselineCache(settings.artifact_dir),
        leader=LeaderLock(engine, settings.rollout_lock_key),
        now=now,
        tick_s=settings.rollout_tick_s,
        battery_lookback_s=settings.rollout_battery_lookback_s,
        metrics=metrics,
    )


def command_builder(settings: Any) -> CommandBuilder:
    base = settings.rollout_public_base_url or f"http://{settings.api_host}:{settings.api_port}"
    return CommandBuilder(
        base_url=base.rstrip("/"),
        retarget_delay_s=settings.rollout_retarget_delay_s,
        shadow_sample_fraction=settings.rollout_shadow_sample_fraction,
        artifact_dir=settings.artifact_dir,
    )
