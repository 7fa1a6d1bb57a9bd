"""The rollout state machine: a pure function of (stored state, fleet, per-device totals, now).

``decide`` never mutates its input and reads no clock, so the same inputs give the same outcome
(idempotent), and a controller rebuilt from a stored :class:`RolloutState` after a restart continues
where the old one stopped. Per call:

1. Evaluate the stage's gates on the cohort (devices commanded so far) against the control group.
2. Any hard failure: roll back (commands ``revert`` — immediate tier — and ``retarget`` to the
   previous release — rapid tier — for every exposed device). Also while paused.
3. Any soft failure: pause (unless the operator overrode soft failures for this stage).
4. Every gate passes, the soak time is over and enough cohort devices report: advance (or complete).
5. Otherwise hold; a hold is recorded when its reason (the set of gates holding) changes.
6. While running (or completed, for the held-back control group), command pending cohort devices,
   battery- and rate-limited (scheduling.py); exposure is recorded in the state.

Statuses: running -> paused -> running; running/paused -> rolled_back | aborted; running -> completed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fleet_server.rollouts import scheduling
from fleet_server.rollouts.cohorts import FleetView, cohort_mask, control_mask
from fleet_server.rollouts.gates import GateContext, evaluate_gates, worst_verdict
from fleet_server.rollouts.model import (
    TERMINAL_STATUSES,
    Command,
    DecisionAction,
    DecisionRecord,
    ExposureReport,
    GateResult,
    Outcome,
    RolloutError,
    RolloutSpec,
    RolloutState,
    StagePlan,
)
from fleet_server.rollouts.totals import DeviceTotals

CONTROLLER: str = "controller"
OperatorAction = Literal["pause", "resume", "abort", "rollback"]


@dataclass(frozen=True)
class Groups:
    """Row masks over a FleetView for the current stage."""

    control: np.ndarray  # held back on the previous version, gates compare against it
    target: np.ndarray  # the stage's cumulative cohort (who should have the candidate by now)
    commanded: np.ndarray  # who was commanded (exposed; or shadowed in a shadow stage): the gate cohort


def start_rollout(spec: RolloutSpec, now: float) -> Outcome:
    # The bucket starts with one minute's worth (at most the burst) so the canary goes out at once.
    tokens = float(min(spec.schedule.burst, spec.schedule.devices_per_minute))
    state = RolloutState(spec=spec, stage_started_at=now, schedule_updated_at=now, schedule_tokens=tokens)
    record = _record(
        state, now, "start", CONTROLLER, "running", f"rollout of {spec.release.release_id} started"
    )
    state.decision_seq = record.seq
    return Outcome(state=state, decisions=[record])


def groups(state: RolloutState, fleet: FleetView) -> Groups:
    """Who is in the control group, the stage's cohort, and who has been commanded."""
    control = control_mask(fleet, state.spec.control)
    if state.status == "completed":  # the holdback is released: everyone eligible gets the candidate
        target = fleet.eligible.copy()
        control = np.zeros(fleet.size, dtype=bool)
    else:
        target = cohort_mask(fleet, state.stage, control)
    if state.stage.kind == "shadow" and state.status != "completed":
        commanded = fleet.mask_of(state.shadowed)
    else:
        commanded = fleet.mask_of(state.exposed)
    return Groups(control=control & ~commanded, target=target, commanded=commanded)


def required_reporting(stage: StagePlan, g: Groups) -> int:
    """Cohort devices that must report before the stage may advance: the stage's
    ``min_reporting_devices``, but never more than the stage's cohort has. A stage only guarantees
    ``min_devices`` (or its fraction) of the fleet: on a 50-device fleet the 10 % stage's cohort is 5
    devices, and asking for 10 of them to report would hold it forever."""
    return max(1, min(stage.min_reporting_devices, int(g.target.sum())))


def decide(
    state: RolloutState,
    fleet: FleetView,
    totals: DeviceTotals,
    now: float,
    baseline: Mapping[int, Sequence[float]] | None = None,
) -> Outcome:
    """One controller step. ``totals`` are per device since ``state.stage_started_at`` (see totals.py);
    ``baseline`` maps input feature index -> the converter's baseline histogram counts."""
    totals.check(fleet.size)
    s = _copy(state)
    if s.status in TERMINAL_STATUSES:
        return Outcome(state=s)
    out = Outcome(state=s)
    g = groups(s, fleet)
    stage = s.stage
    if s.status != "completed":
        soaked = now - s.stage_started_at >= stage.min_soak_s
        ctx = GateContext(
            fleet,
            totals,
            g.commanded,
            g.control,
            shadow=stage.kind == "shadow",
            baseline=baseline,
            final_look=soaked,
        )
        results = evaluate_gates(ctx, stage.gates)
        s.last_gate_results = results
        counts = _counts(fleet, g, ctx)
        verdict = worst_verdict(results)
        if verdict == "hard_fail":
            failed = ", ".join(r.name for r in results if r.verdict == "hard_fail")
            _rollback(s, out, now, CONTROLLER, f"hard gate failure: {failed}", results, counts)
            return out
        if s.status == "paused":
            return out
        if verdict == "soft_fail" and s.soft_override_stage != s.stage_index:
            failed = ", ".join(r.name for r in results if r.verdict == "soft_fail")
            s.paused_by = CONTROLLER
            _decide(
                s, out, now, "pause", CONTROLLER, "paused", f"soft gate failure: {failed}", results, counts
            )
            return out
        holding = [f"{r.name}:{r.verdict}" for r in results if r.verdict not in ("pass", "soft_fail")]
        reporting = counts["reporting"]
        needed = required_reporting(stage, g)
        if not soaked:
            holding.append("soak")
        if reporting < needed:
            holding.append("reporting_devices")
        if holding:
            key = ",".join(holding)
            if key != s.last_hold_reason:
                s.last_hold_reason = key
                reason = _hold_reason(
                    results,
                    stage.min_soak_s,
                    now - s.stage_started_at,
                    reporting,
                    needed,
                )
                _decide(s, out, now, "hold", CONTROLLER, s.status, reason, results, counts)
        else:
            _advance(s, out, fleet, now, results, counts)
            g = groups(s, fleet)
    _schedule(s, out, fleet, g, now)
    return out


def operator_action(
    state: RolloutState,
    action: OperatorAction,
    actor: str,
    now: float,
    reason: str = "",
    *,
    override_soft_failures: bool = False,
) -> Outcome:
    """pause / resume / abort / rollback by an operator; the actor is recorded. ``override_soft_failures``
    with ``resume``: soft gate failures no longer pause the current stage (hard failures still roll back)."""
    if not actor:
        raise RolloutError("an operator action needs an actor")
    s = _copy(state)
    out = Outcome(state=s)
    why = reason or f"{action} by {actor}"
    gates = s.last_gate_results
    if action == "pause":
        if s.status != "running":
            raise RolloutError(f"cannot pause a rollout that is {s.status}")
        s.paused_by = actor
        _decide(s, out, now, "pause", actor, "paused", why, gates, {})
    elif action == "resume":
        if s.status != "paused":
            raise RolloutError(f"cannot resume a rollout that is {s.status}")
        s.paused_by = None
        s.last_hold_reason = None
        if override_soft_failures:
            s.soft_override_stage = s.stage_index
            why += " (soft gate failures overridden for this stage)"
        _decide(s, out, now, "resume", actor, "running", why, gates, {})
    elif action == "abort":
        if s.status not in ("running", "paused"):
            raise RolloutError(f"cannot abort a rollout that is {s.status}")
        _decide(s, out, now, "abort", actor, "aborted", why + "; devices keep what they run", gates, {})
    elif action == "rollback":
        if s.status == "rolled_back":
            raise RolloutError("the rollout is already rolled back")
        _rollback(s, out, now, actor, why, gates, {})
    else:
        raise RolloutError(f"unknown operator action {action!r}")
    return out


def exposure_report(state: RolloutState, running_counter: Mapping[str, int | None]) -> ExposureReport:
    """Exposure accounting from the devices' latest reported model counter (status / metrics). After a
    rollback, ``recovered`` turns true once no exposed device reports the candidate any more; the time
    from ``rolled_back_at`` to then is the rollback's time to recovery."""
    candidate = state.spec.release.counter
    still = [d for d in state.exposed if running_counter.get(d) == candidate]
    unknown = [d for d in state.exposed if running_counter.get(d) is None]
    return ExposureReport(
        ever_exposed=len(state.exposed),
        reverted=len(state.reverted),
        still_on_candidate=still,
        unknown=unknown,
        rolled_back_at=state.rolled_back_at,
        recovered=state.status == "rolled_back" and not still and not unknown,
    )


# ----------------------------------------------------------------------------- steps


def _copy(state: RolloutState) -> RolloutState:
    """A copy the step may change without touching the caller's state: the lists it appends to are
    copied, the spec (never changed here) is shared. A pydantic deep copy of 50,000 exposed ids costs
    as much as the whole decision."""
    return state.model_copy(
        update={
            "exposed": list(state.exposed),
            "shadowed": list(state.shadowed),
            "reverted": list(state.reverted),
            "last_gate_results": list(state.last_gate_results),
        }
    )


def _record(
    s: RolloutState,
    now: float,
    action: DecisionAction,
    actor: str,
    status_after: str,
    reason: str,
    results: Sequence[GateResult] = (),
    counts: Mapping[str, int] | None = None,
) -> DecisionRecord:
    return DecisionRecord(
        rollout_id=s.spec.rollout_id,
        seq=s.decision_seq + 1,
        at=now,
        action=action,
        actor=actor,
        stage_index=s.stage_index,
        stage_name=s.stage.name,
        status_before=s.status,
        status_after=status_after,
        reason=reason,
        gate_results=list(results),
        counts=dict(counts or {}),
    )


def _decide(
    s: RolloutState,
    out: Outcome,
    now: float,
    action: DecisionAction,
    actor: str,
    status_after: str,
    reason: str,
    results: Sequence[GateResult],
    counts: Mapping[str, int],
) -> None:
    record = _record(s, now, action, actor, status_after, reason, results, counts)
    out.decisions.append(record)
    s.decision_seq = record.seq
    s.status = status_after  # type: ignore[assignment]


def _rollback(
    s: RolloutState,
    out: Outcome,
    now: float,
    actor: str,
    reason: str,
    results: Sequence[GateResult],
    counts: Mapping[str, int],
) -> None:
    rel = s.spec.release
    already = set(s.reverted)
    devices = [d for d in s.exposed if d not in already]
    if devices:
        out.commands.append(
            Command(
                kind="revert",
                device_ids=devices,
                release_id=rel.release_id,
                target_counter=rel.previous_counter,
                tier="immediate",
                reason=reason,
            )
        )
        if rel.previous_release_id is not None:
            out.commands.append(
                Command(
                    kind="retarget",
                    device_ids=devices,
                    release_id=rel.previous_release_id,
                    target_counter=rel.previous_counter,
                    tier="rapid",
                    reason=reason,
                )
            )
    shadowed = [d for d in s.shadowed if d not in set(s.exposed)]
    if shadowed and s.stage.kind == "shadow":
        out.commands.append(
            Command(kind="shadow_off", device_ids=shadowed, release_id=rel.release_id, reason=reason)
        )
    s.reverted.extend(devices)
    s.rolled_back_at = now
    counts = {**counts, "rolled_back_devices": len(devices), "ever_exposed": len(s.exposed)}
    _decide(s, out, now, "rollback", actor, "rolled_back", reason, results, counts)


def _advance(
    s: RolloutState,
    out: Outcome,
    fleet: FleetView,
    now: float,
    results: Sequence[GateResult],
    counts: Mapping[str, int],
) -> None:
    stage = s.stage
    if stage.kind == "shadow" and s.shadowed:
        out.commands.append(
            Command(
                kind="shadow_off",
                device_ids=list(s.shadowed),
                release_id=s.spec.release.release_id,
                reason="shadow stage passed",
            )
        )
    last = s.stage_index == len(s.spec.stages) - 1
    if last:
        _decide(
            s,
            out,
            now,
            "complete",
            CONTROLLER,
            "completed",
            f"every gate passed at stage {stage.name!r}; releasing the control group",
            results,
            counts,
        )
        return
    nxt = s.spec.stages[s.stage_index + 1]
    reason = f"every gate passed after {now - s.stage_started_at:.0f} s soak; advancing to {nxt.name!r}"
    _decide(s, out, now, "advance", CONTROLLER, "running", reason, results, counts)
    s.stage_index += 1
    s.stage_started_at = now
    s.last_hold_reason = None
    s.soft_override_stage = None


def _schedule(s: RolloutState, out: Outcome, fleet: FleetView, g: Groups, now: float) -> None:
    tokens = scheduling.refill(s.schedule_tokens, s.schedule_updated_at, now, s.spec.schedule)
    s.schedule_updated_at = max(now, s.schedule_updated_at)
    if s.status not in ("running", "completed"):
        s.schedule_tokens = tokens
        return
    shadow = s.stage.kind == "shadow" and s.status != "completed"
    pending = g.target & ~g.commanded
    if not shadow:
        pending &= ~fleet.mask_of(s.reverted)
    result = scheduling.select(fleet, pending, tokens, s.spec.schedule)
    s.schedule_tokens = result.tokens
    if not result.selected:
        return
    rel = s.spec.release
    if shadow:
        out.commands.append(
            Command(
                kind="shadow_on",
                device_ids=result.selected,
                release_id=rel.release_id,
                target_counter=rel.counter,
                reason=f"stage {s.stage.name!r}",
            )
        )
        s.shadowed.extend(result.selected)
    else:
        out.commands.append(
            Command(
                kind="update",
                device_ids=result.selected,
                release_id=rel.release_id,
                target_counter=rel.counter,
                reason=f"stage {s.stage.name!r}",
            )
        )
        s.exposed.extend(result.selected)


def _counts(fleet: FleetView, g: Groups, ctx: GateContext) -> dict[str, int]:
    return {
        "eligible": int(fleet.eligible.sum()),
        "control": int(g.control.sum()),
        "control_reporting": int(ctx.control_reporting.sum()),
        "target": int(g.target.sum()),
        "commanded": int(g.commanded.sum()),
        "reporting": int(ctx.reporting.sum()),
    }


def _hold_reason(
    results: Sequence[GateResult], min_soak: int, soaked: float, reporting: int, min_reporting: int
) -> str:
    parts = [f"{r.name}: {r.reason}" for r in results if r.verdict == "insufficient_data"]
    if soaked < min_soak:
        parts.append(f"soak {soaked:.0f} s of {min_soak} s")
    if reporting < min_reporting:
        parts.append(f"{reporting} of {min_reporting} cohort devices reporting")
    return "holding: " + "; ".join(parts)
