"""Deterministic cohorts: a stable hash of (rollout id, device id) puts each device at a point in [0, 1).

Stage cohorts are prefixes of the same ordering (lowest points first), so a device in stage k's
cohort is in every later one. The control group uses a second, independent hash (salted with
``control:``) so that which devices are held back is unrelated to the cohort order.

The fleet is held column-wise in numpy arrays (:class:`FleetView`) so that choosing cohorts for
100,000 devices is a few vector operations; the points are computed once per rollout (the DB layer
may store them next to the device rows).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from fleet_server.rollouts.model import ControlPlan, RolloutError, StagePlan, TargetFilter

_SCALE = 2.0**-64


def hash_point(rollout_id: str, device_id: str, salt: str = "") -> float:
    """A point in [0, 1) from BLAKE2b-64 of ``salt + rollout_id + NUL + device_id``; stable across
    processes and Python versions (unlike ``hash()``)."""
    digest = hashlib.blake2b(f"{salt}{rollout_id}\0{device_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * _SCALE


def hash_points(rollout_id: str, device_ids: Iterable[str], salt: str = "") -> np.ndarray:
    return np.fromiter((hash_point(rollout_id, d, salt) for d in device_ids), dtype=np.float64)


class DeviceInfo(BaseModel):
    """What the registry and the latest status say about a device (input to :meth:`FleetView.build`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    device_id: str = Field(min_length=1)
    hardware_class: str
    tags: list[str] = Field(default_factory=list)
    battery_pct: float | None = Field(default=None, ge=0, le=100)  # None: mains powered / unknown
    charging: bool = False


@dataclass
class FleetView:
    """The registered fleet for one rollout, column-wise. Row order is the caller's; nothing depends on it."""

    device_ids: np.ndarray  # str
    hardware_class: np.ndarray  # str
    eligible: np.ndarray  # bool: matches the rollout's target filter
    battery_pct: np.ndarray  # float64, NaN = unknown / mains powered
    charging: np.ndarray  # bool
    points: np.ndarray  # float64 cohort points
    control_points: np.ndarray  # float64 control points
    _index: dict[str, int] | None = field(default=None, repr=False)
    # mask_of of a list: id -> (the list, its length then, mask). The state's id lists (exposed, shadowed,
    # reverted) only grow, and one decision asks for the mask of the same 50,000-id list several times.
    _masks: dict[int, tuple[list[str], int, np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = len(self.device_ids)
        for name in ("hardware_class", "eligible", "battery_pct", "charging", "points", "control_points"):
            if len(getattr(self, name)) != n:
                raise RolloutError(f"fleet column {name!r} has {len(getattr(self, name))} rows, expected {n}")

    @property
    def size(self) -> int:
        return len(self.device_ids)

    @classmethod
    def build(cls, rollout_id: str, target: TargetFilter, devices: Sequence[DeviceInfo]) -> FleetView:
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            raise RolloutError("device ids in the fleet are not unique")
        return cls(
            device_ids=np.array(ids, dtype=object),
            hardware_class=np.array([d.hardware_class for d in devices], dtype=object),
            eligible=np.array([target.matches(d.hardware_class, d.tags) for d in devices], dtype=bool),
            battery_pct=np.array(
                [math.nan if d.battery_pct is None else d.battery_pct for d in devices], dtype=np.float64
            ),
            charging=np.array([d.charging for d in devices], dtype=bool),
            points=hash_points(rollout_id, ids),
            control_points=hash_points(rollout_id, ids, salt="control:"),
        )

    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {d: i for i, d in enumerate(self.device_ids.tolist())}
        return self._index

    def mask_of(self, device_ids: Iterable[str]) -> np.ndarray:
        """Boolean row mask of the given ids; ids no longer registered are ignored. A list is treated as
        append-only: asked again for the same list object, only the ids appended since are looked up."""
        if not isinstance(device_ids, list):
            return self._mask(device_ids)
        hit = self._masks.get(id(device_ids))
        if hit is not None and hit[0] is device_ids and len(device_ids) >= hit[1]:
            mask = hit[2] | self._mask(device_ids[hit[1] :]) if len(device_ids) > hit[1] else hit[2]
        else:
            mask = self._mask(device_ids)
        if len(self._masks) >= 16:
            self._masks.clear()
        self._masks[id(device_ids)] = (device_ids, len(device_ids), mask)
        return mask.copy()

    def _mask(self, device_ids: Iterable[str]) -> np.ndarray:
        idx = self.index()
        rows = [i for i in (idx.get(d) for d in device_ids) if i is not None]
        mask = np.zeros(self.size, dtype=bool)
        mask[rows] = True
        return mask


def _lowest(points: np.ndarray, candidates: np.ndarray, fraction: float, min_count: int) -> np.ndarray:
    """Mask of the candidates with the lowest points: at least ``fraction`` of them (by point threshold,
    stable as the fleet grows) and at least ``min_count`` (the k lowest)."""
    pts = np.where(candidates, points, np.inf)
    n = int(candidates.sum())
    if n == 0:
        return np.zeros_like(candidates)
    by_fraction = candidates & (points < fraction)
    k = min(max(min_count, int(by_fraction.sum())), n)
    if k == int(by_fraction.sum()):
        return by_fraction
    kth = np.partition(pts, k - 1)[k - 1]  # points are distinct with overwhelming probability
    return candidates & (pts <= kth)


def control_mask(fleet: FleetView, plan: ControlPlan) -> np.ndarray:
    """The control group. Its ``min_devices`` floor takes at most half the eligible devices: on a 20-device
    fleet the default floor of 20 would hold the whole fleet back and leave no cohort to roll out to."""
    if plan.fraction == 0 and plan.min_devices == 0:
        return np.zeros(fleet.size, dtype=bool)
    floor = min(plan.min_devices, int(fleet.eligible.sum()) // 2)
    return _lowest(fleet.control_points, fleet.eligible, plan.fraction, floor)


def cohort_mask(fleet: FleetView, stage: StagePlan, control: np.ndarray) -> np.ndarray:
    """The stage's cumulative cohort among eligible devices outside the control group."""
    return _lowest(fleet.points, fleet.eligible & ~control, stage.fraction, stage.min_devices)
