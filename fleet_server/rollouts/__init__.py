"""Staged rollouts with model-aware gates: plain domain objects, no HTTP, MQTT or database.

Entry points: :func:`start_rollout`, :func:`decide`, :func:`operator_action` (controller.py), over a
:class:`FleetView` (cohorts.py) and per-device :class:`DeviceTotals` (totals.py). See
docs/rollout-gates.md.
"""

from fleet_server.rollouts.cohorts import DeviceInfo, FleetView, hash_point, hash_points
from fleet_server.rollouts.controller import (
    Groups,
    decide,
    exposure_report,
    groups,
    operator_action,
    start_rollout,
)
from fleet_server.rollouts.model import (
    Command,
    DecisionRecord,
    GateConfig,
    GateResult,
    Outcome,
    ReleaseRef,
    RolloutError,
    RolloutSpec,
    RolloutState,
    StagePlan,
    TargetFilter,
    default_stages,
)
from fleet_server.rollouts.totals import DeviceTotals

__all__ = [
    "Command",
    "DecisionRecord",
    "DeviceInfo",
    "DeviceTotals",
    "FleetView",
    "GateConfig",
    "GateResult",
    "Groups",
    "Outcome",
    "ReleaseRef",
    "RolloutError",
    "RolloutSpec",
    "RolloutState",
    "StagePlan",
    "TargetFilter",
    "decide",
    "default_stages",
    "exposure_report",
    "groups",
    "hash_point",
    "hash_points",
    "operator_action",
    "start_rollout",
]
