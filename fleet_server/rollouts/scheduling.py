"""Which devices get the update (or shadow) command now.

* Battery: a device reporting battery below ``min_battery_pct`` and not charging is deferred (it would
  spend its charge on a download and a flash write); unknown battery (mains powered) is fine.
* Rate: a token bucket refilled at ``devices_per_minute`` and capped at ``burst``; its level and time are
  part of the stored rollout state, so the rate holds across decisions and restarts.
* Order: ascending cohort hash point (the cohort order), so the same inputs pick the same devices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleet_server.rollouts.cohorts import FleetView
from fleet_server.rollouts.model import SchedulePlan


@dataclass(frozen=True)
class ScheduleResult:
    selected: list[str]  # command these now, in order
    deferred_battery: int  # pending devices held back by low battery
    deferred_rate: int  # pending devices waiting for the rate limit
    tokens: float  # bucket level after this selection


def refill(tokens: float, updated_at: float, now: float, plan: SchedulePlan) -> float:
    elapsed = max(0.0, now - updated_at)  # a clock going backwards adds nothing
    return min(float(plan.burst), tokens + elapsed * plan.devices_per_minute / 60.0)


def battery_ok(fleet: FleetView, plan: SchedulePlan) -> np.ndarray:
    b = fleet.battery_pct
    return np.isnan(b) | (b >= plan.min_battery_pct) | fleet.charging


def select(fleet: FleetView, pending: np.ndarray, tokens: float, plan: SchedulePlan) -> ScheduleResult:
    """Pick up to floor(tokens) pending devices whose battery allows it, lowest cohort point first."""
    ok = pending & battery_ok(fleet, plan)
    deferred_battery = int(pending.sum() - ok.sum())
    rows = np.flatnonzero(ok)
    budget = int(tokens)
    if len(rows) > budget:
        # argpartition then sort the chosen few: O(n + k log k), not a full sort of the pending set
        part = np.argpartition(fleet.points[rows], budget - 1)[:budget] if budget > 0 else rows[:0]
        rows = rows[part]
    rows = rows[np.argsort(fleet.points[rows], kind="stable")]
    selected = fleet.device_ids[rows].tolist()
    return ScheduleResult(
        selected=selected,
        deferred_battery=deferred_battery,
        deferred_rate=int(ok.sum()) - len(selected),
        tokens=tokens - len(selected),
    )
