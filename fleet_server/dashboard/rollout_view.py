"""Shape a stored rollout for its page: stage cards with cohort sizes, gate rows, decision rows.

Reads through fleet_server.rollout_runner.service (the same views GET /api/v1/rollouts/{id} returns) and
the domain types of fleet_server.rollouts.model; nothing here decides anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from fleet_server.rollout_runner import service
from fleet_server.rollouts.model import DecisionRecord, GateResult, RolloutState

MAX_DECISIONS = 1000  # newest decisions read for one page (holds are recorded only when their reason changes)

# Which operator actions each status allows (mirrors controller.operator_action; the controller still
# decides: a refused action comes back as a 409 with its reason).
ACTIONS_BY_STATUS: dict[str, tuple[str, ...]] = {
    "running": ("pause", "rollback"),
    "paused": ("resume", "rollback"),
    "completed": ("rollback",),
    "rolled_back": (),
    "aborted": (),
}


@dataclass(frozen=True)
class StageCard:
    index: int
    name: str
    kind: str
    fraction: float
    min_devices: int
    min_soak_s: int
    state: str  # "done", "current", "pending"
    cohort: int | None  # devices in the stage's cohort at its latest decision
    commanded: int | None
    reporting: int | None


# Gates whose headline value and threshold are different quantities: the false-positive gate reports the
# cohort's FP rate and judges it by the test's significance level alpha (p-value < alpha), so "value as a
# share of the threshold" would mean nothing there.
THRESHOLD_IS_ALPHA = frozenset({"false_positive"})


@dataclass(frozen=True)
class GateRow:
    name: str
    verdict: str
    value: float | None
    threshold: float | None
    reason: str
    values: dict[str, float | None]

    @property
    def threshold_is_alpha(self) -> bool:
        return self.name in THRESHOLD_IS_ALPHA

    @property
    def ratio(self) -> float | None:
        """Value as a share of its threshold (1.0 = at the bound), for the gate plot."""
        if self.value is None or not self.threshold or self.name in THRESHOLD_IS_ALPHA:
            return None
        return self.value / self.threshold


def gate_rows(results: list[GateResult]) -> list[GateRow]:
    return [GateRow(g.name, g.verdict, g.value, g.threshold, g.reason, dict(g.values)) for g in results]


@dataclass(frozen=True)
class RolloutPage:
    detail: dict[str, Any]
    state: RolloutState
    stages: list[StageCard]
    gates: list[GateRow]
    decisions: list[DecisionRecord]  # newest first
    decisions_total: int
    actions: tuple[str, ...]


def _stage_cards(
    state: RolloutState, decisions: list[DecisionRecord], summary: dict[str, Any]
) -> list[StageCard]:
    latest_counts: dict[int, dict[str, int]] = {}
    for d in decisions:  # oldest first: the last one per stage wins
        if d.counts:
            latest_counts[d.stage_index] = d.counts
    cards = []
    for i, stage in enumerate(state.spec.stages):
        if state.status == "completed" or i < state.stage_index:
            where = "done"
        elif i == state.stage_index:
            where = "current"
        else:
            where = "pending"
        counts = latest_counts.get(i, {})
        if where == "current" and summary:
            counts = {**counts, **{k: v for k, v in summary.items() if isinstance(v, int)}}
        cards.append(
            StageCard(
                index=i,
                name=stage.name,
                kind=stage.kind,
                fraction=stage.fraction,
                min_devices=stage.min_devices,
                min_soak_s=stage.min_soak_s,
                state=where,
                cohort=counts.get("target"),
                commanded=counts.get("commanded"),
                reporting=counts.get("reporting"),
            )
        )
    return cards


def rollout_page(session: Session, rollout_id: str, now: float) -> RolloutPage:
    """Raises service.RolloutNotFound for an unknown id."""
    row = service.get_rollout(session, rollout_id)
    detail = service.rollout_detail(session, row, now)
    state = service.state_of(row)
    _, total = service.list_decisions(session, rollout_id, limit=1, offset=0)
    stored, _ = service.list_decisions(
        session, rollout_id, limit=MAX_DECISIONS, offset=max(0, total - MAX_DECISIONS)
    )
    decisions = [DecisionRecord.model_validate(d.record) for d in stored]
    return RolloutPage(
        detail=detail,
        state=state,
        stages=_stage_cards(state, decisions, dict(row.summary or {})),
        gates=gate_rows(state.last_gate_results),
        decisions=list(reversed(decisions)),
        decisions_total=total,
        actions=ACTIONS_BY_STATUS.get(state.status, ()),
    )
