"""Rollout service: create, operator actions, stored outcomes, read views. Shared by routes, CLI, dashboard
and the runner; plain functions over a Session (the caller commits).

Every state change goes through :func:`save_outcome`: the new ``RolloutState``, its decisions and its
outbox commands are written together, guarded by the row's ``revision`` (optimistic lock), so an operator
pausing while a runner tick is computing makes the tick's write fail (:class:`StaleRollout`) instead of
silently undoing the pause.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from fleet_server.db.base import utcnow
from fleet_server.db.devices import Device
from fleet_server.db.releases import Release
from fleet_server.db.rollouts import RolloutCommand, RolloutDecision, RolloutRow
from fleet_server.rollout_runner.command_builder import CommandBuilder
from fleet_server.rollouts import controller
from fleet_server.rollouts.model import (
    ControlPlan,
    GateConfig,
    Outcome,
    ReleaseRef,
    RolloutError,
    RolloutSpec,
    RolloutState,
    SchedulePlan,
    StagePlan,
    TargetFilter,
    default_stages,
)
from fleet_server.service_errors import ServiceError

ACTIVE_STATUSES = ("running", "paused")


class RolloutServiceError(ServiceError):
    status_code = 422
    code = "validation_error"


class RolloutNotFound(RolloutServiceError):
    status_code = 404
    code = "not_found"


class RolloutConflict(RolloutServiceError):
    status_code = 409
    code = "conflict"


class InvalidRollout(RolloutServiceError):
    status_code = 422
    code = "validation_error"


class StaleRollout(RolloutConflict):
    """The rollout changed since it was read (another writer won); nothing was written."""

    code = "stale_rollout"


@dataclass
class CreateRequest:
    release_id: str
    previous_release_id: str | None = None
    target: TargetFilter = field(default_factory=TargetFilter)
    stages: list[StagePlan] | None = None
    shadow: bool = False
    min_soak_s: int | None = None
    gates: GateConfig | None = None
    control: ControlPlan | None = None
    schedule: SchedulePlan | None = None


# ----------------------------------------------------------------------------- create


def _previous_release(session: Session, release: Release, previous_id: str | None) -> Release | None:
    if previous_id is not None:
        prev = session.get(Release, previous_id)
        if prev is None:
            raise InvalidRollout(f"previous release {previous_id!r} does not exist")
        if prev.model_name != release.model_name or prev.counter >= release.counter:
            raise InvalidRollout(
                f"previous release {previous_id!r} must be an older release of model {release.model_name!r}"
            )
        return prev
    return session.scalars(
        select(Release)
        .where(
            Release.model_name == release.model_name,
            Release.counter < release.counter,
            Release.state == "active",
        )
        .order_by(Release.counter.desc())
        .limit(1)
    ).first()


def targets_overlap(a: TargetFilter, b: TargetFilter) -> bool:
    """Can one device match both filters? Disjoint hardware classes, or the same tag key required with
    different values, make them disjoint; anything else may overlap."""
    if a.hardware_classes and b.hardware_classes and not set(a.hardware_classes) & set(b.hardware_classes):
        return False

    def pairs(f: TargetFilter) -> dict[str, str]:
        return dict(t.split("=", 1) for t in f.tags if "=" in t)

    pa, pb = pairs(a), pairs(b)
    return all(pa[k] == pb[k] for k in pa.keys() & pb.keys())


def _stages(req: CreateRequest) -> list[StagePlan]:
    if req.stages is not None:
        if req.shadow or req.min_soak_s is not None:
            raise InvalidRollout("give either stages or shadow/min_soak_s (which shape the default stages)")
        stages = req.stages
    else:
        stages = default_stages(
            shadow=req.shadow, min_soak_s=3600 if req.min_soak_s is None else req.min_soak_s
        )
    if req.gates is not None:
        stages = [s.model_copy(update={"gates": req.gates}) for s in stages]
    return stages


def create_rollout(session: Session, req: CreateRequest, *, actor: str, now: float) -> RolloutRow:
    """Validate and store a new running rollout with its ``start`` decision. Refuses (nothing stored):
    unknown release (422), withdrawn release (409), invalid plan (422), a running/paused rollout of the same
    model whose target overlaps (409)."""
    release = session.get(Release, req.release_id)
    if release is None:
        raise InvalidRollout(f"release {req.release_id!r} does not exist", [{"loc": "body.release_id"}])
    if release.state != "active":
        raise RolloutConflict(f"release {release.id!r} is {release.state}; only active releases roll out")
    prev = _previous_release(session, release, req.previous_release_id)
    rollout_id = "ro-" + secrets.token_hex(6)
    try:
        spec = RolloutSpec(
            rollout_id=rollout_id,
            release=ReleaseRef(
                release_id=release.id,
                model=release.model_name,
                version=release.version,
                counter=release.counter,
                previous_release_id=prev.id if prev else None,
                previous_version=prev.version if prev else None,
                previous_counter=prev.counter if prev else None,
            ),
            target=req.target,
            stages=_stages(req),
            control=req.control or ControlPlan(),
            schedule=req.schedule or SchedulePlan(),
            created_at=now,
        )
    except ValidationError as exc:
        details = [
            {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()
        ]
        raise InvalidRollout("invalid rollout plan: " + details[0]["msg"], details) from None
    # Lock the model's active rollouts (PostgreSQL) so two concurrent creates cannot both pass the check.
    active = session.scalars(
        select(RolloutRow)
        .where(RolloutRow.model_name == release.model_name, RolloutRow.status.in_(ACTIVE_STATUSES))
        .with_for_update()
    ).all()
    for other in active:
        other_target = TargetFilter.model_validate(other.state["spec"]["target"])
        if targets_overlap(other_target, spec.target):
            raise RolloutConflict(
                f"rollout {other.id} of model {release.model_name!r} is {other.status} with an overlapping "
                "target; finish, abort or roll it back first",
                {"rollout_id": other.id},
            )
    outcome = controller.start_rollout(spec, now)
    row = RolloutRow(
        id=rollout_id,
        release_id=release.id,
        previous_release_id=prev.id if prev else None,
        model_name=release.model_name,
        status=outcome.state.status,
        state=outcome.state.model_dump(mode="json"),
        revision=1,
        finished=False,
        summary={},
        created_by=actor,
    )
    session.add(row)
    session.flush()
    _add_decisions(session, outcome)
    return row


# ----------------------------------------------------------------------------- store an outcome


def _add_decisions(session: Session, outcome: Outcome) -> None:
    for d in outcome.decisions:
        session.add(
            RolloutDecision(
                rollout_id=d.rollout_id,
                seq=d.seq,
                at=d.at,
                action=d.action,
                actor=d.actor[:128],
                stage_name=d.stage_name[:64],
                status_after=d.status_after,
                record=d.model_dump(mode="json"),
            )
        )


def save_outcome(
    session: Session,
    row: RolloutRow,
    outcome: Outcome,
    *,
    expected_revision: int,
    builder: CommandBuilder | None,
    running_counter: Mapping[str, int | None],
    now: float,
    summary: dict[str, Any] | None = None,
    finished: bool | None = None,
    device_class: Mapping[str, str] | None = None,
) -> list[RolloutCommand]:
    """Write state + decisions + outbox in the caller's transaction; raise :class:`StaleRollout` when the
    row moved past ``expected_revision``."""
    state = outcome.state
    values: dict[str, Any] = {
        "state": state.model_dump(mode="json"),
        "status": state.status,
        "revision": expected_revision + 1,
        "updated_at": utcnow(),
    }
    if summary is not None:
        values["summary"] = summary
    if finished is not None:
        values["finished"] = finished
    result = session.execute(
        update(RolloutRow)
        .where(RolloutRow.id == row.id, RolloutRow.revision == expected_revision)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise StaleRollout(f"rollout {row.id} changed meanwhile; try again")
    _add_decisions(session, outcome)
    commands: list[RolloutCommand] = []
    if outcome.commands:
        if builder is None:
            raise RuntimeError("commands to send but no command builder given")
        commands = builder.rows(
            session, row.id, state.decision_seq, outcome.commands, running_counter, now, device_class
        )
        session.add_all(commands)
    session.flush()
    session.expire(row)
    return commands


def running_counters(
    session: Session, model_name: str, device_ids: Iterable[str] | None = None
) -> dict[str, int]:
    """Device id -> the counter of ``model_name`` it last reported running (devices on it only)."""
    stmt = select(Device.id, Device.current_version).where(Device.current_model == model_name)
    if device_ids is not None:
        ids = list(device_ids)
        if len(ids) <= 1000:
            stmt = stmt.where(Device.id.in_(ids))
    out = {}
    for device_id, version in session.execute(stmt):
        if version is not None and version.isdigit():
            out[device_id] = int(version)
    return out


# ----------------------------------------------------------------------------- operator actions


def get_rollout(session: Session, rollout_id: str) -> RolloutRow:
    row = session.get(RolloutRow, rollout_id)
    if row is None:
        raise RolloutNotFound(f"rollout {rollout_id!r} does not exist")
    return row


def state_of(row: RolloutRow) -> RolloutState:
    return RolloutState.model_validate(row.state)


def apply_action(
    session: Session,
    rollout_id: str,
    action: str,
    *,
    actor: str,
    now: float,
    builder: CommandBuilder | None,
    reason: str = "",
    override_soft_failures: bool = False,
) -> RolloutRow:
    """pause / resume / abort / rollback by ``actor``; an impossible transition is a 409 with the reason.
    Rollback commands go to the outbox (the runner publishes them)."""
    row = get_rollout(session, rollout_id)
    revision = row.revision
    state = state_of(row)
    try:
        outcome = controller.operator_action(
            state,
            action,  # type: ignore[arg-type]
            actor,
            now,
            reason,
            override_soft_failures=override_soft_failures,
        )
    except RolloutError as exc:
        raise RolloutConflict(str(exc), {"status": state.status}) from None
    counters: Mapping[str, int | None] = {}
    classes: dict[str, str] = {}
    if any(c.kind == "retarget" for c in outcome.commands):
        ids = outcome.commands[0].device_ids
        counters = running_counters(session, state.spec.release.model, ids)
        classes = dict(
            session.execute(select(Device.id, Device.hardware_class).where(Device.id.in_(ids))).all()
        )
    # An abort is done at once; a rollback (also after an abort) is watched until the devices recovered.
    finished = True if action == "abort" else False if action == "rollback" else None
    save_outcome(
        session,
        row,
        outcome,
        expected_revision=revision,
        builder=builder,
        running_counter=counters,
        now=now,
        finished=finished,
        device_class=classes,
    )
    session.refresh(row)
    return row


# ----------------------------------------------------------------------------- read views


def list_rollouts(
    session: Session, *, status: str | None, limit: int, offset: int
) -> tuple[list[RolloutRow], int]:
    where = [RolloutRow.status == status] if status else []
    total = session.scalar(select(func.count()).select_from(RolloutRow).where(*where)) or 0
    rows = session.scalars(
        select(RolloutRow)
        .where(*where)
        .order_by(RolloutRow.created_at.desc(), RolloutRow.id)
        .limit(limit)
        .offset(offset)
    ).all()
    return list(rows), int(total)


def list_decisions(
    session: Session, rollout_id: str, *, limit: int, offset: int
) -> tuple[list[RolloutDecision], int]:
    get_rollout(session, rollout_id)
    where = RolloutDecision.rollout_id == rollout_id
    total = session.scalar(select(func.count()).select_from(RolloutDecision).where(where)) or 0
    rows = session.scalars(
        select(RolloutDecision).where(where).order_by(RolloutDecision.seq).limit(limit).offset(offset)
    ).all()
    return list(rows), int(total)


def _gate_view(state: RolloutState) -> list[dict[str, Any]]:
    return [
        {
            "name": g.name,
            "verdict": g.verdict,
            "value": g.value,
            "threshold": g.threshold,
            "reason": g.reason,
            "values": g.values,
        }
        for g in state.last_gate_results
    ]


def _sample_size(state: RolloutState) -> dict[str, Any] | None:
    for g in state.last_gate_results:
        if g.name == "false_positive":
            ev = g.evidence
            return {
                "n_required": ev.get("n_required"),
                "cohort_n": ev.get("cohort_n"),
                "control_n": ev.get("control_n"),
                "enough_evidence": ev.get("enough_evidence", False),
                "alpha": ev.get("alpha"),
                "power": ev.get("power"),
                "delta": ev.get("delta"),
            }
    return None


def rollout_brief(row: RolloutRow) -> dict[str, Any]:
    state = state_of(row)
    return {
        "id": row.id,
        "release_id": row.release_id,
        "previous_release_id": row.previous_release_id,
        "model_name": row.model_name,
        "status": row.status,
        "finished": row.finished,
        "stage_index": state.stage_index,
        "stage_name": state.stage.name,
        "stages": len(state.spec.stages),
        "exposed": len(state.exposed),
        "created_by": row.created_by,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def rollout_detail(session: Session, row: RolloutRow, now: float) -> dict[str, Any]:
    """Everything an operator looks at: stage, cohort sizes, each gate's value vs threshold, exposure,
    the FP test's required sample size."""
    state = state_of(row)
    counters = running_counters(session, state.spec.release.model, state.exposed)
    exposure = controller.exposure_report(state, counters)
    stage = state.stage
    detail = rollout_brief(row)
    detail.update(
        {
            "stage": {
                "index": state.stage_index,
                "name": stage.name,
                "kind": stage.kind,
                "fraction": stage.fraction,
                "min_devices": stage.min_devices,
                "min_soak_s": stage.min_soak_s,
                "min_reporting_devices": stage.min_reporting_devices,
                "started_at": state.stage_started_at,
                "soaked_s": max(0.0, now - state.stage_started_at),
            },
            "plan": [
                {"name": s.name, "kind": s.kind, "fraction": s.fraction, "min_soak_s": s.min_soak_s}
                for s in state.spec.stages
            ],
            "target": state.spec.target.model_dump(),
            "cohort": dict(row.summary or {}),
            "gates": _gate_view(state),
            "required_sample_size": _sample_size(state),
            "exposure": _exposure_view(exposure.model_dump(mode="json"), row.summary or {}),
            "paused_by": state.paused_by,
            "decision_seq": state.decision_seq,
            "revision": row.revision,
        }
    )
    return detail


EXPOSURE_IDS_SHOWN = 100


def _exposure_view(report: dict[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """Counts plus at most EXPOSURE_IDS_SHOWN ids per list (a rollback of 50,000 devices stays readable)."""
    out = dict(report)
    for key in ("still_on_candidate", "unknown"):
        ids = report[key]
        out[key] = ids[:EXPOSURE_IDS_SHOWN]
        out[f"{key}_count"] = len(ids)
    out["time_to_recovery_s"] = summary.get("time_to_recovery_s")
    return out


def as_utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)
