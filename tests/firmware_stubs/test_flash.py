"""Simulated flash: budget from the profile, refusals with ENOSPC, the full-disk switch, path safety."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from firmware_stubs.flash import FlashArea, FlashFullError
from firmware_stubs.hardware_profiles import CORTEX_M4F, ESP32_S3, KIB


def test_budget_is_two_slots_plus_state(tmp_path: Path) -> None:
    flash = FlashArea.for_profile(CORTEX_M4F, tmp_path / "flash")
    assert flash.budget_bytes == 2 * 384 * KIB + 64 * KIB
    assert flash.root.is_dir() and flash.used_bytes() == 0
    assert FlashArea.for_profile(ESP32_S3, tmp_path / "esp", state_bytes=0).budget_bytes == 4 * 1024 * KIB


def test_write_that_does_not_fit_is_refused_and_keeps_what_was_stored(tmp_path: Path) -> None:
    flash = FlashArea(tmp_path, 1000)
    flash.write_bytes("slot_a.bin", b"a" * 600)
    with pytest.raises(FlashFullError, match="needs 500 more but only 400 of 1000 bytes are free") as info:
        flash.write_bytes("slot_b.bin", b"b" * 500)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert not (tmp_path / "slot_b.bin").exists()
    # Replacing atomically needs room for old and new at once: 600 + 600 > 1000.
    with pytest.raises(FlashFullError):
        flash.write_bytes("slot_a.bin", b"c" * 600)
    assert flash.read_bytes("slot_a.bin") == b"a" * 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slot_a.bin"]  # no temp file left
    flash.write_bytes("slot_b.bin", b"b" * 400)  # exactly fills it
    assert flash.free_bytes() == 0


def test_in_place_overwrite_counts_the_replaced_file(tmp_path: Path) -> None:
    flash = FlashArea(tmp_path, 1000)
    flash.write_bytes("slot_a.bin", b"a" * 900)
    flash.ensure_room(900, replacing="slot_a.bin")  # same size, in place: fits
    flash.ensure_room(950, replacing=tmp_path / "slot_a.bin")  # absolute path inside the area
    with pytest.raises(FlashFullError):
        flash.ensure_room(1001, replacing="slot_a.bin")


def test_full_disk_switch(tmp_path: Path) -> None:
    flash = FlashArea(tmp_path, 10_000)
    flash.append_bytes("telemetry/buffer.log", b"one\n")
    flash.set_full(True)
    assert flash.full and flash.free_bytes() == 0
    with pytest.raises(FlashFullError, match="simulated full disk"):
        flash.append_bytes("telemetry/buffer.log", b"two\n")
    with pytest.raises(FlashFullError, match="simulated full disk"):
        flash.write_bytes("state.json", b"{}")
    with pytest.raises(FlashFullError):
        flash.ensure_room(1)
    flash.ensure_room(0)  # writing nothing always fits
    assert flash.read_bytes("telemetry/buffer.log") == b"one\n"
    flash.set_full(False)
    flash.append_bytes("telemetry/buffer.log", b"two\n")
    assert flash.read_bytes("telemetry/buffer.log") == b"one\ntwo\n"


def test_check_budget_catches_writers_that_bypassed_the_area(tmp_path: Path) -> None:
    flash = FlashArea(tmp_path, 100)
    flash.check_budget()
    (tmp_path / "rogue.bin").write_bytes(b"x" * 101)
    with pytest.raises(FlashFullError, match="over its budget"):
        flash.check_budget()


@pytest.mark.parametrize("bad", ["../outside.bin", "/etc/passwd", "", "a/../../b"])
def test_paths_outside_the_area_are_refused(tmp_path: Path, bad: str) -> None:
    flash = FlashArea(tmp_path / "flash", 1000)
    with pytest.raises(ValueError, match="flash"):
        flash.write_bytes(bad, b"x")
    assert not (tmp_path / "outside.bin").exists()


def test_bad_budgets_and_roots(tmp_path: Path) -> None:
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="budget"):
            FlashArea(tmp_path, bad)  # type: ignore[arg-type]
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a directory"):
        FlashArea(tmp_path / "file", 100)
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "old.bin").write_bytes(b"x" * 200)
    with pytest.raises(ValueError, match="already holds 200 bytes"):
        FlashArea(tmp_path / "big", 100)
    assert (tmp_path / "big" / "old.bin").read_bytes() == b"x" * 200  # nothing stored is touched
    with pytest.raises(ValueError, match="exceed the board's"):
        FlashArea.for_profile(CORTEX_M4F, tmp_path / "m4", state_bytes=512 * KIB)
    with pytest.raises(ValueError, match="state_bytes"):
        FlashArea.for_profile(CORTEX_M4F, tmp_path / "m4", state_bytes=-1)
    with pytest.raises(ValueError, match="byte count"):
        FlashArea(tmp_path / "ok", 100).ensure_room(-1)
