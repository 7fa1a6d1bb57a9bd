"""Deterministic cohorts: stable points, cumulative stages, a disjoint control group, exposure."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fleet_server.rollouts import (
    DeviceInfo,
    FleetView,
    RolloutError,
    TargetFilter,
    default_stages,
    hash_point,
)
from fleet_server.rollouts.cohorts import cohort_mask, control_mask
from fleet_server.rollouts.model import ControlPlan, StagePlan


def _devices(n: int, start: int = 0) -> list[DeviceInfo]:
    return [
        DeviceInfo(
            device_id=f"d{i}",
            hardware_class="esp32-s3" if i % 3 else "cortex-m4f",
            tags=["lab"] if i % 5 == 0 else [],
        )
        for i in range(start, start + n)
    ]


def test_hash_point_is_blake2b_of_rollout_and_device_and_stable_across_processes() -> None:
    # Independent computation of the documented definition.
    digest = hashlib.blake2b(b"ro-9\x00dev-1", digest_size=8).digest()
    assert hash_point("ro-9", "dev-1") == int.from_bytes(digest, "big") / 2**64
    # Another interpreter with another hash seed gives the same point (no reliance on hash()).
    code = "from fleet_server.rollouts import hash_point; print(repr(hash_point('ro-9', 'dev-1')))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    assert float(other.stdout) == hash_point("ro-9", "dev-1")
    assert hash_point("ro-9", "dev-1") != hash_point("ro-10", "dev-1")


def test_points_are_uniform() -> None:
    fleet = FleetView.build("ro-u", TargetFilter(), _devices(5000))
    assert stats.kstest(fleet.points, "uniform").pvalue > 0.001
    assert stats.kstest(fleet.control_points, "uniform").pvalue > 0.001
    # cohort and control hashes are independent
    assert abs(stats.pearsonr(fleet.points, fleet.control_points).statistic) < 0.05


def test_stages_are_cumulative_and_respect_minimums() -> None:
    fleet = FleetView.build("ro-c", TargetFilter(), _devices(2000))
    control = control_mask(fleet, ControlPlan(fraction=0.05, min_devices=20))
    masks = [cohort_mask(fleet, s, control) for s in default_stages()]
    sizes = [int(m.sum()) for m in masks]
    assert sizes[0] >= 5
    assert sizes[-1] == 2000 - int(control.sum())
    for earlier, later in itertools.pairwise(masks):
        assert not np.any(earlier & ~later)  # a device in stage k is in every later cohort
    assert not np.any(masks[-1] & control)
    assert 0.03 < control.mean() < 0.07


def test_canary_minimum_on_a_small_fleet_and_control_minimum() -> None:
    fleet = FleetView.build("ro-s", TargetFilter(), _devices(60))
    control = control_mask(fleet, ControlPlan(fraction=0.01, min_devices=20))
    assert control.sum() == 20
    canary = cohort_mask(fleet, StagePlan(name="c", fraction=0.01, min_devices=5), control)
    assert canary.sum() == 5
    # the five are the lowest points among eligible non-control devices
    others = np.sort(fleet.points[~control])
    assert set(fleet.points[canary]) == set(others[:5])


def test_target_filter_hardware_class_and_tags() -> None:
    target = TargetFilter(hardware_classes=["cortex-m4f"], tags=["lab"])
    fleet = FleetView.build("ro-t", target, _devices(300))
    expected = [i % 3 == 0 and i % 5 == 0 for i in range(300)]
    assert fleet.eligible.tolist() == expected
    control = control_mask(fleet, ControlPlan())
    assert not np.any(control & ~fleet.eligible)
    assert not np.any(cohort_mask(fleet, StagePlan(name="all", fraction=1.0), control) & ~fleet.eligible)


@settings(max_examples=30, deadline=None)
@given(st.permutations(list(range(200))), st.integers(1, 300))
def test_cohort_independent_of_row_order_and_stable_when_fleet_grows(order: list[int], extra: int) -> None:
    devs = _devices(200)
    stage = StagePlan(name="10%", fraction=0.10, min_devices=5)
    plan = ControlPlan(fraction=0.05, min_devices=0)
    a = FleetView.build("ro-p", TargetFilter(), devs)
    b = FleetView.build("ro-p", TargetFilter(), [devs[i] for i in order])
    ids = lambda f, m: set(f.device_ids[m].tolist())  # noqa: E731
    ca, cb = control_mask(a, plan), control_mask(b, plan)
    assert ids(a, ca) == ids(b, cb)
    assert ids(a, cohort_mask(a, stage, ca)) == ids(b, cohort_mask(b, stage, cb))
    grown = FleetView.build("ro-p", TargetFilter(), devs + _devices(extra, start=1000))
    cg = control_mask(grown, plan)
    assert ids(a, ca) <= ids(grown, cg)  # fraction-based control: nobody leaves it when devices register
    if (
        cohort_mask(a, stage, ca).sum() > 5
    ):  # fraction-based cohort (not the minimum): a superset after growth
        assert ids(a, cohort_mask(a, stage, ca)) <= ids(grown, cohort_mask(grown, stage, cg))


def test_fleet_view_rejects_duplicates_and_misaligned_columns() -> None:
    with pytest.raises(RolloutError, match="not unique"):
        FleetView.build("ro", TargetFilter(), _devices(3) + _devices(1))
    f = FleetView.build("ro", TargetFilter(), _devices(3))
    with pytest.raises(RolloutError, match="'charging' has 2 rows, expected 3"):
        FleetView(
            f.device_ids,
            f.hardware_class,
            f.eligible,
            f.battery_pct,
            f.charging[:2],
            f.points,
            f.control_points,
        )
    assert f.mask_of(["d1", "gone"]).tolist() == [False, True, False]
