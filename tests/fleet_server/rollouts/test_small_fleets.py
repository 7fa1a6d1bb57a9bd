"""Small fleets (the 50-device demo, a 20-device lab) complete a good rollout with the default stages:
a stage never asks for more reporting devices than its cohort holds, and the control group's floor never
takes the whole fleet."""

from __future__ import annotations

import numpy as np
import pytest
from rollout_sim import Run, SimFleet

from fleet_server.rollouts import default_stages
from fleet_server.rollouts.cohorts import control_mask
from fleet_server.rollouts.controller import groups, required_reporting
from fleet_server.rollouts.model import ControlPlan


@pytest.mark.parametrize("n", [50, 20])
def test_good_release_completes_on_a_small_fleet(n: int) -> None:
    sim = SimFleet(n=n, seed=11)
    run = Run(sim, sim.spec(soak=1800))
    state = run.until({"completed", "paused", "rolled_back", "aborted"}, max_steps=120)
    assert state.status == "completed", [d.reason for d in run.decisions][-3:]
    advances = [d for d in run.decisions if d.action in ("advance", "complete")]
    assert [d.stage_name for d in advances] == ["canary", "10%", "50%", "100%"]
    # Every stage advanced with at least as many reporting devices as it required, and no hold on
    # reporting devices lasted until the end.
    for d in advances:
        stage = next(s for s in run.spec.stages if s.name == d.stage_name)
        assert d.counts["reporting"] >= min(stage.min_reporting_devices, d.counts["target"])
    # The 10 % stage could not have advanced on its configured figure: its cohort is smaller.
    ten = next(d for d in advances if d.stage_name == "10%")
    assert ten.counts["target"] < stages_by_name(run)["10%"].min_reporting_devices


def stages_by_name(run: Run) -> dict:
    return {s.name: s for s in run.spec.stages}


def test_required_reporting_is_capped_by_the_stage_cohort() -> None:
    sim = SimFleet(n=50, seed=2)
    run = Run(sim, sim.spec())
    stages = default_stages()
    needed = []
    for i, stage in enumerate(stages):
        run.state.stage_index = i
        g = groups(run.state, run.fleet)
        needed.append((int(g.target.sum()), required_reporting(stage, g)))
    # 50 devices, 20 in control: the 10 % stage's cohort is its floor of 5 devices (10 % of 30 is 3), below
    # the configured 10; the 100 % stage's 30 devices are more than the configured 20.
    assert needed[0] == (5, 5) and needed[1] == (5, 5)
    for (target, req), stage in zip(needed, stages, strict=True):
        assert req == min(stage.min_reporting_devices, target)
    assert needed[3] == (30, 20)
    # A large fleet keeps the configured figures.
    big = SimFleet(n=2000, seed=2)
    run = Run(big, big.spec())
    for i, stage in enumerate(stages):
        run.state.stage_index = i
        assert required_reporting(stage, groups(run.state, run.fleet)) == stage.min_reporting_devices


def test_control_floor_takes_at_most_half_the_eligible_fleet() -> None:
    for n, expected in ((20, 10), (50, 20), (7, 3), (1, 0)):
        fleet = SimFleet(n=n, seed=1).view(SimFleet(n=n, seed=1).spec())
        mask = control_mask(fleet, ControlPlan(fraction=0.05, min_devices=20))
        assert int(mask.sum()) == expected, n
    # An explicit fraction is the operator's choice and is not capped.
    fleet = SimFleet(n=20, seed=1).view(SimFleet(n=20, seed=1).spec())
    mask = control_mask(fleet, ControlPlan(fraction=0.9, min_devices=0))
    assert int(mask.sum()) == int(np.sum(fleet.control_points < 0.9)) > 10
