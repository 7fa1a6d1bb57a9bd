"""bsdiff4 deltas: interop with the stock bspatch/bsdiff binaries, checks on both ends, ship policy."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from ota import keys
from ota.delta import DeltaPolicy, apply_patch, compressed_size, make_patch, read_patch_header
from ota.errors import HashMismatchError, LengthMismatchError, PatchBaseMismatchError, PatchFormatError
from ota.release import PreviousArtifact, ReleaseSigner, build_release


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _pair(seed: int = 1, size: int = 60_000) -> tuple[bytes, bytes]:
    """A compressible 'model' and a version with a few changed regions (like a fine-tuned head)."""
    rng = random.Random(seed)
    words = [rng.randbytes(8) for _ in range(300)]
    old = b"".join(rng.choice(words) for _ in range(size // 8))
    new = bytearray(old)
    for start in (1000, 30_000, 55_000):
        new[start : start + 200] = rng.randbytes(200)
    return old, bytes(new)


OLD, NEW = _pair()


def _apply(base: bytes, patch: bytes, new: bytes = NEW) -> bytes:
    return apply_patch(base, patch, base_sha256=sha(OLD), result_sha256=sha(new), result_length=len(new))


def test_round_trip() -> None:
    patch = make_patch(OLD, NEW)
    assert patch[:8] == b"BSDIFF40"
    assert read_patch_header(patch).new_length == len(NEW)
    assert _apply(OLD, patch) == NEW
    assert len(patch) < len(NEW) // 10


@pytest.mark.skipif(shutil.which("bspatch") is None, reason="bspatch not installed")
def test_stock_bspatch_applies_our_patch(tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(OLD)
    (tmp_path / "p").write_bytes(make_patch(OLD, NEW))
    subprocess.run(["bspatch", "old", "new", "p"], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    assert (tmp_path / "new").read_bytes() == NEW


@pytest.mark.skipif(shutil.which("bsdiff") is None, reason="bsdiff not installed")
def test_we_apply_a_stock_bsdiff_patch(tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(OLD)
    (tmp_path / "new").write_bytes(NEW)
    subprocess.run(["bsdiff", "old", "new", "p"], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    assert _apply(OLD, (tmp_path / "p").read_bytes()) == NEW


def test_patch_made_against_another_base() -> None:
    base = os.urandom(30_000)
    sibling = base[:10_000] + bytes(100) + base[10_100:]  # same model line, a few bytes differ
    new = base[:20_000] + os.urandom(50) + base[20_050:]
    patch = make_patch(sibling, new)
    with pytest.raises(PatchBaseMismatchError):
        apply_patch(base, patch, base_sha256=sha(sibling), result_sha256=sha(new), result_length=len(new))
    # even if a (compromised) manifest claimed this base, the result hash still catches it
    with pytest.raises(HashMismatchError):
        apply_patch(base, patch, base_sha256=sha(base), result_sha256=sha(new), result_length=len(new))


def test_bit_flipped_base() -> None:
    base = bytearray(OLD)
    base[7] ^= 1
    with pytest.raises(PatchBaseMismatchError):
        _apply(bytes(base), make_patch(OLD, NEW))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p[:20],
        lambda p: p[: len(p) // 2],
        lambda p: b"BSDIFF41" + p[8:],
        lambda p: p[:8] + (2**62).to_bytes(8, "little") + p[16:],
        lambda p: p[:8] + (5 | 1 << 63).to_bytes(8, "little") + p[16:],
        lambda p: p + b"trailing",
        lambda p: p[:40] + bytes(b ^ 0xFF for b in p[40:60]) + p[60:],
    ],
    ids=["header-only", "half", "magic", "huge-control", "negative", "trailing", "corrupt-bz2"],
)
def test_malformed_patches(mangle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PatchFormatError):
        _apply(OLD, mangle(make_patch(OLD, NEW)))


def test_patch_for_other_result_length() -> None:
    with pytest.raises(LengthMismatchError):
        apply_patch(
            OLD,
            make_patch(OLD, NEW),
            base_sha256=sha(OLD),
            result_sha256=sha(NEW),
            result_length=len(NEW) + 1,
        )


def test_patch_with_wrong_result_hash() -> None:
    with pytest.raises(HashMismatchError):
        apply_patch(
            OLD, make_patch(OLD, NEW), base_sha256=sha(OLD), result_sha256="0" * 64, result_length=len(NEW)
        )


def test_policy_ships_small_delta_and_falls_back_to_full_for_unrelated_artifact() -> None:
    root = keys.generate_private_key()
    signer = ReleaseSigner.certified_by(root)
    unrelated = os.urandom(len(NEW))  # a 'full retrain': nothing shared with the new artifact
    rel = build_release(
        NEW,
        model="m",
        version="1.2.0",
        counter=3,
        hardware_classes=["pi-4"],
        variant="full_int8",
        signer=signer,
        previous=[PreviousArtifact("1.0.0", 1, unrelated), PreviousArtifact("1.1.0", 2, OLD)],
    )
    by_version = {d.from_version: d for d in rel.decisions}
    assert by_version["1.1.0"].shipped and not by_version["1.0.0"].shipped
    assert by_version["1.0.0"].patch_length >= 0.5 * compressed_size(NEW)
    assert [d.from_version for d in rel.manifest.deltas] == ["1.1.0"]
    assert set(rel.patches) == {sha(OLD)}
    assert _apply(OLD, rel.patches[sha(OLD)]) == NEW


def test_policy_threshold_is_configurable() -> None:
    patch = make_patch(OLD, NEW)
    full = compressed_size(NEW)
    fraction = len(patch) / full
    assert DeltaPolicy(max_fraction=min(1.0, fraction * 1.01)).ships(len(patch), full)
    assert not DeltaPolicy(max_fraction=fraction * 0.99).ships(len(patch), full)
    with pytest.raises(ValueError):
        DeltaPolicy(max_fraction=0)
