"""The simulated board as the agent sees it: the Board protocol over clock, sensors, power and flash."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from converters.features import FeatureSpec
from converters.reference.datasets import DatasetError, load_kws_meta
from firmware_stubs.board import Board, BrownoutError, SimulatedBoard, Storage, make_simulated_board
from firmware_stubs.clock import Clock, RealClock, SimClock
from firmware_stubs.hardware_profiles import CORTEX_M4F, PI_ZERO_2W
from firmware_stubs.power import BatterySpec, PluggedIn, PowerModel
from firmware_stubs.sensor_streams import DriftSpec, FeedbackSpec, StreamConfig
from firmware_stubs.sensors import kws_pools


def test_simulated_board_implements_the_interface(tmp_path: Path) -> None:
    board = make_simulated_board("cortex-m4f", task="kws", flash_root=tmp_path)
    assert isinstance(board, Board) and isinstance(board.storage, Storage) and isinstance(board.clock, Clock)
    assert board.profile is CORTEX_M4F
    assert board.storage.root == tmp_path and board.storage.budget_bytes == 2 * 384 * 1024 + 64 * 1024
    sample = board.read_sensor()
    spec = FeatureSpec.model_validate(load_kws_meta()["feature_spec"])
    assert sample.window.shape == (*spec.input_shape, 1) and sample.window.dtype == np.float32
    assert sample.index == 0 and sample.t_s == 0.0 and sample.timestamp == board.clock.now()
    state = board.battery()
    assert state.percent == 100.0 and state.voltage == 4.2 and not state.charging


def test_boards_of_a_fleet_share_one_copy_of_the_task_data(tmp_path: Path) -> None:
    a = make_simulated_board("cortex-m4f", task="kws", flash_root=tmp_path / "a")
    b = make_simulated_board("esp32-s3", task="kws", flash_root=tmp_path / "b",
                             stream_config=StreamConfig(seed=1))
    assert a.stream.pools.nominal.windows is b.stream.pools.nominal.windows
    assert not a.stream.pools.nominal.windows.flags.writeable  # nobody can corrupt the shared copy
    sample = a.read_sensor()
    sample.window[:] = 0.0  # a sample is the caller's own copy
    assert a.stream.pools.nominal.windows.max() > 0.0


def test_digits_board_on_a_pi(tmp_path: Path) -> None:
    board = make_simulated_board("pi-zero-2w", task="digits", flash_root=tmp_path,
                                 stream_config=StreamConfig(event_fraction=0.5))
    sample = board.read_sensor()
    assert sample.window.shape == (8, 8, 1)
    assert sample.label in range(10) and sample.is_event == (sample.label == 0)


def test_record_energy_scales_host_time_and_moves_the_sim_clock(tmp_path: Path) -> None:
    board = make_simulated_board("cortex-m4f", task="kws", flash_root=tmp_path)
    use = board.record_energy(active_seconds=0.01, radio_bytes=15_625)
    # 10 ms on the host x 300 = 3 s on the M4F; 15 625 B at 15 625 B/s = 1 s on air.
    assert use.device_active_s == pytest.approx(3.0) and use.radio_s == pytest.approx(1.0)
    assert use.charge_mah == pytest.approx(((3.3 - 0.0015) * 3 + 4.8 * 1) / 3600)
    assert board.clock.monotonic() == pytest.approx(4.0)
    board.clock.sleep(3596.0)
    report = board.power_report()
    assert report.elapsed_s == pytest.approx(3600.0)
    # 0.0015 mA for the hour + (3.3 - 0.0015) mA for 3 s + 4.8 mA for 1 s
    assert report.drawn_mah == pytest.approx((0.0015 * 3600 + 3.2985 * 3 + 4.8) / 3600)


def test_real_clock_board_does_not_jump_time(tmp_path: Path) -> None:
    clock = RealClock()
    board = make_simulated_board("pi-4", task="digits", flash_root=tmp_path, clock=clock)
    t0 = clock.monotonic()
    use = board.record_energy(active_seconds=5.0)  # 15 s on a Pi 4 at slowdown 3, not slept here
    assert use.device_active_s == pytest.approx(15.0)
    assert clock.monotonic() - t0 < 5.0
    assert board.read_sensor().t_s < 5.0


def test_bad_energy_records_change_nothing(tmp_path: Path) -> None:
    board = make_simulated_board("cortex-m4f", task="kws", flash_root=tmp_path)
    board.record_energy(active_seconds=0.001)
    before, t = board.power_report(), board.clock.monotonic()
    for kwargs in ({"active_seconds": -1.0}, {"active_seconds": float("nan")}, {"active_seconds": "1"},
                   {"active_seconds": 1.0, "radio_bytes": -3}, {"active_seconds": 1.0, "radio_bytes": 2.5}):
        with pytest.raises(ValueError, match=r"active_seconds|radio_bytes"):
            board.record_energy(**kwargs)  # type: ignore[arg-type]
    assert board.power_report() == before and board.clock.monotonic() == t


def test_charging_board_reports_charging(tmp_path: Path) -> None:
    board = make_simulated_board("pi-zero-2w", task="digits", flash_root=tmp_path,
                                 battery=BatterySpec(capacity_mah=10_000, initial_percent=50),
                                 charging=PluggedIn(charge_ma=1000, from_s=600))
    board.clock.sleep(300)
    assert not board.battery().charging
    board.clock.sleep(3300)
    state = board.battery()
    assert state.charging
    # 5000 - 100 mA x 1 h + 1000 mA x (3000 s / 3600) = 5733.33 mAh
    assert state.percent == pytest.approx(100 * (5000 - 100 + 1000 * 3000 / 3600) / 10_000)


def test_empty_battery_browns_out_the_board(tmp_path: Path) -> None:
    board = make_simulated_board("pi-4", task="digits", flash_root=tmp_path,
                                 battery=BatterySpec(capacity_mah=540))  # 540 mA idle: one hour
    board.clock.sleep(1800)
    board.read_sensor()
    board.clock.sleep(1800.5)
    assert board.battery().percent == 0.0
    with pytest.raises(BrownoutError, match="battery empty"):
        board.read_sensor()


def test_reboot_raises_the_flag_and_calls_back(tmp_path: Path) -> None:
    calls: list[float] = []
    board = make_simulated_board("esp32-s3", task="kws", flash_root=tmp_path,
                                 on_reboot=lambda: calls.append(1.0))
    assert not board.reboot_requested
    board.reboot()
    assert board.reboot_requested and board.reboot_count == 1 and calls == [1.0]
    board.acknowledge_reboot()
    assert not board.reboot_requested and board.reboot_count == 1


def test_feedback_through_the_board_arrives_after_its_delay(tmp_path: Path) -> None:
    cfg = StreamConfig(seed=1, event_fraction=0.0, feedback=FeedbackSpec(delay_s=30))
    board = make_simulated_board("cortex-m4f", task="kws", flash_root=tmp_path, stream_config=cfg)
    sample = board.read_sensor()
    assert sample.is_event is False
    board.report_detection(sample.index)
    board.clock.sleep(29)
    assert board.poll_feedback() == []
    board.clock.sleep(1)
    [fb] = board.poll_feedback()
    assert fb.sample_index == sample.index and fb.false_positive and fb.reported_at_s == 30.0


def test_drift_through_the_board_follows_simulated_time(tmp_path: Path) -> None:
    board = make_simulated_board("cortex-m4f", task="kws", flash_root=tmp_path)
    board.stream.inject_drift(DriftSpec(start_s=60, use_drifted_pool=True))
    tags = []
    for _ in range(120):
        tags.append("drift" in board.read_sensor().injected)
        board.clock.sleep(1.0)
    assert tags == [False] * 60 + [True] * 60


def test_an_hour_of_duty_cycling_simulates_quickly(tmp_path: Path) -> None:
    # A functional check that the sim clock never blocks; figures are in bench/firmware_sim.py.
    board = make_simulated_board("cortex-m4f", task="kws", flash_root=tmp_path)
    start = time.perf_counter()
    while board.clock.monotonic() < 3600:
        board.read_sensor()
        use = board.record_energy(active_seconds=0.0002)
        board.clock.sleep(max(0.0, 1.0 - use.device_active_s))
    assert time.perf_counter() - start < 60  # generous: a blocking sleep would take an hour
    assert board.stream.samples_read == 3600


def test_bad_board_construction(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown hardware class"):
        make_simulated_board("cortex-m7", task="kws", flash_root=tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        make_simulated_board("cortex-m4f", task="speech", flash_root=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=r"kws_meta\.json"):
        kws_pools(data_dir=tmp_path / "nowhere")
    board = make_simulated_board("cortex-m4f", task="kws", flash_root=tmp_path / "a")
    with pytest.raises(ValueError, match="power model is for 'pi-zero-2w'"):
        SimulatedBoard(CORTEX_M4F, stream=board.stream, flash=board.flash, power=PowerModel(PI_ZERO_2W))


def test_clock_bad_inputs() -> None:
    clock = SimClock()
    clock.advance(10)
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sleep"):
            clock.sleep(bad)
    with pytest.raises(ValueError, match="back"):
        clock.advance_to(5)
    assert clock.monotonic() == 10.0
    with pytest.raises(ValueError, match="epoch"):
        SimClock(epoch_s=-1)
