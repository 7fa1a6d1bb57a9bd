"""Slot store and installer: A/B install, trial, commit, revert, resume, deltas, and every bad input.

Real parts only: .tflite models from the TensorFlow converter, signed releases from ota.release,
slots loaded with the LiteRT interpreter. Every refusal test asserts the named error *and* that the
active slot's bytes are unchanged (by sha256) and still load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_stubs.hardware_profiles import get_profile
from ota.delta import make_patch
from ota.errors import (
    ArtifactTooLargeError,
    DowngradeError,
    HashMismatchError,
    LengthMismatchError,
    ManifestFormatError,
    PatchBaseMismatchError,
)
from ota.installer import Installer, bytes_source
from ota.release import sign_manifest_document
from ota.slot_errors import (
    InstallStateError,
    NoBootableSlotError,
    NotProvisionedError,
    RefusedReleaseError,
)
from ota.slot_state import read_copies, state_path, write_state
from ota.slots import SlotStore

HERE = Path(__file__).parent
CAPACITY = 64 * 1024 * 1024
CHUNK = 100  # small chunks and checkpoints: the ~2 KB test models cross many of them


def _support():
    name = "tinyfleet_tests_slot_support"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "_slot_support.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory):
    support = _support()
    v1, v2 = support.build_models(tmp_path_factory.getbasetemp() / "ota-models")
    return support.make_kit(v1, v2)


@pytest.fixture
def store(tmp_path: Path, kit) -> SlotStore:
    s = SlotStore(tmp_path / "flash", capacity=CAPACITY, checkpoint_bytes=300)
    s.provision(kit.v1, counter=1)
    return s


def installer(store: SlotStore, kit) -> Installer:
    return Installer(store, kit.device(), write_chunk=CHUNK)


def slot_sha(store: SlotStore, slot: str) -> str:
    return sha(store.slot_path(slot).read_bytes())


def assert_runs(store: SlotStore, expected: bytes) -> None:
    """A fresh boot picks a slot holding ``expected``, matching its record, and LiteRT runs it."""
    decision = SlotStore(store.root, capacity=store.capacity).boot()
    assert sha(decision.path.read_bytes()) == decision.image.sha256 == sha(expected)
    out = _support().run_litert(decision.path)
    assert out.shape == (1, 3) and np.all(np.isfinite(out))


def full_install(store: SlotStore, kit) -> None:
    installer(store, kit).install(kit.release_v2.manifest_bytes, artifact=bytes_source(kit.v2, CHUNK))


# -- the happy paths ---------------------------------------------------------------------------------


def test_full_install_trial_commit(store: SlotStore, kit) -> None:
    progress: list[tuple[str, int, int]] = []
    inst = Installer(store, kit.device(), on_progress=lambda *p: progress.append(p), write_chunk=CHUNK)
    plan = inst.install(kit.release_v2.manifest_bytes, artifact=bytes_source(kit.v2, CHUNK))
    assert plan.kind == "full" and plan.pending.slot == "b"
    assert slot_sha(store, "a") == sha(kit.v1), "the running slot was written"
    assert progress[-1] == ("download", len(kit.v2), len(kit.v2))
    st = store.load()
    assert (st.active, st.trial, st.installed_counter) == ("b", True, 1), "counter advanced before commit"
    decision = store.boot()
    assert (decision.slot, decision.trial, decision.boot_attempts) == ("b", True, 1)
    inst.finish_trial(healthy=True)
    st = store.load()
    assert (st.active, st.trial, st.installed_counter, st.pending) == ("b", False, 2, None)
    assert_runs(store, kit.v2)


def test_delta_install_patches_the_active_slot(store: SlotStore, kit) -> None:
    patch = kit.release_v2.patches[sha(kit.v1)]
    requested: list[int] = []

    def patch_source(offset: int) -> Iterator[bytes]:
        requested.append(offset)
        yield from bytes_source(patch, CHUNK)(offset)

    plan = installer(store, kit).install(kit.release_v2.manifest_bytes, patch=patch_source)
    assert plan.kind == "delta" and requested == [0]
    assert slot_sha(store, "b") == sha(kit.v2) and slot_sha(store, "a") == sha(kit.v1)
    assert not store.patch_path.exists(), "staging patch left behind after verification"
    store.boot()
    store.commit()
    assert_runs(store, kit.v2)


def test_resume_continues_from_the_durable_offset(store: SlotStore, kit) -> None:
    calls: list[int] = []

    def flaky(offset: int) -> Iterator[bytes]:
        calls.append(offset)
        for i, chunk in enumerate(bytes_source(kit.v2, CHUNK)(offset)):
            if len(calls) == 1 and i == 12:
                raise ConnectionError("link dropped")  # a transport failure, not a refusal
            yield chunk

    inst = installer(store, kit)
    with pytest.raises(ConnectionError):
        inst.install(kit.release_v2.manifest_bytes, artifact=flaky)
    pending = store.load().pending
    assert pending is not None and pending.phase == "downloading"
    durable = pending.progress.offset
    assert 0 < durable <= 12 * CHUNK
    assert pending.progress.prefix_sha256 == sha(kit.v2[:durable])
    # A new process (fresh store object) resumes after re-hashing the durable prefix.
    resumed = Installer(SlotStore(store.root, capacity=CAPACITY, checkpoint_bytes=300), kit.device())
    resumed.resume(artifact=flaky)
    assert calls == [0, durable]
    assert slot_sha(store, "b") == sha(kit.v2)


def test_resume_restarts_when_the_partial_bytes_were_damaged(store: SlotStore, kit) -> None:
    calls: list[int] = []

    def source(offset: int) -> Iterator[bytes]:
        calls.append(offset)
        for i, chunk in enumerate(bytes_source(kit.v2, CHUNK)(offset)):
            if len(calls) == 1 and i == 10:
                raise ConnectionError("link dropped")
            yield chunk

    with pytest.raises(ConnectionError):
        installer(store, kit).install(kit.release_v2.manifest_bytes, artifact=source)
    partial = bytearray(store.slot_path("b").read_bytes())
    partial[5] ^= 0x40  # flash damaged inside the part the record says is durable
    store.slot_path("b").write_bytes(bytes(partial))
    installer(SlotStore(store.root, capacity=CAPACITY), kit).resume(artifact=source)
    assert calls == [0, 0]
    assert slot_sha(store, "b") == sha(kit.v2)


def test_revert_remembers_the_release_as_refused(store: SlotStore, kit) -> None:
    full_install(store, kit)
    store.boot()
    installer(store, kit).finish_trial(healthy=False, reason="false-positive rate too high")
    st = store.load()
    assert (st.active, st.installed_counter, st.is_refused(2)) == ("a", 1, True)
    assert "false-positive" in st.refused[0].reason
    with pytest.raises(RefusedReleaseError):
        installer(store, kit).plan(kit.release_v2.manifest_bytes)
    assert store.load().pending is None
    assert_runs(store, kit.v1)


def test_uncommitted_trial_reverts_after_max_boot_attempts(store: SlotStore, kit) -> None:
    full_install(store, kit)
    attempts = [store.boot() for _ in range(store.max_boot_attempts)]
    assert [(d.slot, d.trial, d.boot_attempts) for d in attempts] == [
        ("b", True, n) for n in range(1, store.max_boot_attempts + 1)
    ]
    after = store.boot()  # the trial never committed: the device crashed every time
    assert (after.slot, after.trial) == ("a", False)
    assert after.event is not None and "boot attempts" in after.event
    st = store.load()
    assert st.installed_counter == 1 and st.is_refused(2)
    assert_runs(store, kit.v1)


def test_rollback_of_a_committed_release(store: SlotStore, kit) -> None:
    with pytest.raises(InstallStateError, match="no verified previous model"):
        store.rollback("nothing to go back to")  # factory state: slot b is empty
    full_install(store, kit)
    store.boot()
    store.commit()
    store.rollback("fleet-wide false positives")
    st = store.load()
    # Back on v1; the floor stays at 2 and v2 is refused, so only a newer release installs next.
    assert (st.active, st.trial, st.installed_counter, st.is_refused(2)) == ("a", False, 2, True)
    assert_runs(store, kit.v1)
    with pytest.raises(DowngradeError):
        installer(store, kit).plan(kit.release_v2.manifest_bytes)


def test_counter_never_goes_backwards(store: SlotStore, kit) -> None:
    full_install(store, kit)
    store.boot()
    store.commit()
    old = kit.release(kit.v1, 1)  # a validly signed older release (a downgrade or a replay)
    with pytest.raises(DowngradeError):
        installer(store, kit).plan(old.manifest_bytes)
    with pytest.raises(DowngradeError):
        installer(store, kit).plan(kit.release_v2.manifest_bytes)  # replay of the installed one
    with pytest.raises(DowngradeError):  # the store's own guard, independent of the trust module
        store.begin_update(kind="full", manifest=b"{}", sha256=sha(kit.v1), length=len(kit.v1), counter=2)
    assert store.load().installed_counter == 2
    assert_runs(store, kit.v2)


def test_capacity_comes_from_the_hardware_profile(tmp_path: Path, kit) -> None:
    profile = get_profile("cortex-m4f")
    s = SlotStore.for_profile(tmp_path / "m4", profile)
    assert s.capacity == profile.model_flash_budget_bytes
    with pytest.raises(ArtifactTooLargeError):
        s.provision(b"\0" * (profile.model_flash_budget_bytes + 1), counter=1)
    assert not s.is_provisioned()
    with pytest.raises(KeyError, match="unknown hardware class"):
        SlotStore.for_profile(tmp_path / "x", "cortex-m99")
    with pytest.raises(ValueError, match="capacity"):
        SlotStore(tmp_path / "y", capacity=0)


def test_delta_only_source_without_a_matching_delta_changes_nothing(store: SlotStore, kit) -> None:
    no_delta = kit.release(kit.v2, 2)  # a release offering no patch at all
    before = store.load()
    with pytest.raises(InstallStateError, match="full download"):
        installer(store, kit).install(no_delta.manifest_bytes, patch=bytes_source(b"x" * 64))
    assert store.load() == before


# -- bad input: each refused by name, the active slot untouched ------------------------------------------


def _refused(store: SlotStore, kit, exc: type[Exception], **install_args) -> None:
    before = slot_sha(store, "a")
    with pytest.raises(exc):
        installer(store, kit).install(kit.release_v2.manifest_bytes, **install_args)
    st = store.load()
    assert (st.active, st.trial, st.pending, st.installed_counter) == ("a", False, None, 1)
    assert slot_sha(store, "a") == before == sha(kit.v1)
    assert_runs(store, kit.v1)


def test_bit_flipped_artifact_is_refused(store: SlotStore, kit) -> None:
    flipped = bytearray(kit.v2)
    flipped[len(flipped) // 2] ^= 0x01
    _refused(store, kit, HashMismatchError, artifact=bytes_source(bytes(flipped), CHUNK))
    full_install(store, kit)  # and the genuine artifact still installs afterwards
    assert slot_sha(store, "b") == sha(kit.v2)


def test_short_artifact_is_refused(store: SlotStore, kit) -> None:
    _refused(store, kit, LengthMismatchError, artifact=bytes_source(kit.v2[:-7], CHUNK))


def test_long_artifact_is_refused_before_it_is_written(store: SlotStore, kit) -> None:
    _refused(store, kit, LengthMismatchError, artifact=bytes_source(kit.v2 + b"\0" * 500, CHUNK))
    assert store.slot_path("b").stat().st_size <= len(kit.v2)


def test_artifact_larger_than_the_slot_is_refused(tmp_path: Path, kit) -> None:
    small = SlotStore(tmp_path / "small", capacity=len(kit.v2) - 1)
    small.provision(kit.v1, counter=1)
    _refused(small, kit, ArtifactTooLargeError, artifact=bytes_source(kit.v2, CHUNK))
    assert not small.slot_path("b").exists()


def test_patch_made_against_another_base_is_refused(store: SlotStore, kit) -> None:
    other_base = bytearray(kit.v1)
    other_base[100:140] = bytes(40)
    patch = make_patch(bytes(other_base), kit.v2)
    # A server bug: the manifest names v1 as base, but the patch was computed from other bytes.
    doc = json.loads(kit.release_v2.manifest_bytes)
    doc["deltas"] = [
        {**doc["deltas"][0], "patch_sha256": sha(patch), "patch_length": len(patch)},
    ]
    manifest = sign_manifest_document(doc, kit.signer)
    before = slot_sha(store, "a")
    with pytest.raises(HashMismatchError):
        installer(store, kit).install(manifest, patch=bytes_source(patch, CHUNK))
    st = store.load()
    assert (st.active, st.pending, slot_sha(store, "a")) == ("a", None, before)
    assert_runs(store, kit.v1)


def test_patch_refused_when_the_active_bytes_are_not_its_base(store: SlotStore, kit) -> None:
    inst = installer(store, kit)
    plan = inst.plan(kit.release_v2.manifest_bytes)
    assert plan.kind == "delta"
    inst.download(plan, bytes_source(kit.release_v2.patches[sha(kit.v1)], CHUNK))
    good = store.slot_path("a").read_bytes()
    damaged = bytearray(good)
    damaged[-3] ^= 0xFF  # the active slot's flash changed under the store
    store.slot_path("a").write_bytes(bytes(damaged))
    with pytest.raises(PatchBaseMismatchError):
        inst.verify(plan)
    assert store.slot_path("a").read_bytes() == bytes(damaged), "the store wrote the active slot"
    assert store.load().pending is None and store.load().active == "a"


def test_garbled_manifest_is_refused_and_nothing_changes(store: SlotStore, kit) -> None:
    before = store.load()
    with pytest.raises(ManifestFormatError):
        installer(store, kit).plan(kit.release_v2.manifest_bytes[:-20])
    assert store.load() == before


def test_install_during_trial_and_commit_without_trial_are_refused(store: SlotStore, kit) -> None:
    with pytest.raises(InstallStateError):
        store.commit()
    full_install(store, kit)
    with pytest.raises(InstallStateError):
        installer(store, kit).plan(kit.release_v2.manifest_bytes)


# -- bad input: the state record ----------------------------------------------------------------------


def _newest_copy(store: SlotStore) -> Path:
    return state_path(store.root, read_copies(store.root)[0].generation)


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty", "checksum"])
def test_damaged_newest_state_copy_falls_back_to_the_previous(store: SlotStore, kit, damage: str) -> None:
    full_install(store, kit)
    store.boot()
    store.commit()
    path = _newest_copy(store)
    data = path.read_bytes()
    damaged = {
        "truncate": data[: len(data) // 2],
        "garble": data[:40] + b"\xff\x00garbage" + data[50:],
        "empty": b"",
        "checksum": data.replace(b'"installed_counter": 2', b'"installed_counter": 9'),
    }[damage]
    assert damaged != data
    path.write_bytes(damaged)
    fresh = SlotStore(store.root, capacity=CAPACITY)
    decision = fresh.boot()
    # commit is written to both copies, so the surviving one holds the same decision.
    assert (decision.slot, decision.trial, fresh.load().installed_counter) == ("b", False, 2)
    assert_runs(store, kit.v2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cuts=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=6),
    both=st.booleans(),
)
def test_any_damage_to_the_state_copies_still_boots_a_verified_model(
    store: SlotStore, kit, cuts: list[tuple[int, int]], both: bool
) -> None:
    copies = sorted(store.root.glob("state.*.json"))
    originals = {p: p.read_bytes() for p in copies}
    try:
        for p in copies if both else copies[:1]:
            data = bytearray(originals[p])
            for pos, value in cuts:
                if value == 0:
                    del data[pos % max(len(data), 1) :]  # truncation
                elif data:
                    data[pos % len(data)] ^= value
            p.write_bytes(bytes(data))
        decision = SlotStore(store.root, capacity=CAPACITY).boot()
        assert sha(decision.path.read_bytes()) == decision.image.sha256 == sha(kit.v1)
    finally:
        for p, data in originals.items():
            p.write_bytes(data)


def test_both_state_copies_lost_recovers_from_slot_metadata(store: SlotStore, kit) -> None:
    full_install(store, kit)
    store.boot()
    store.commit()
    for p in store.root.glob("state.*.json"):
        p.write_bytes(b'{"record": {"trunc')
    fresh = SlotStore(store.root, capacity=CAPACITY)
    decision = fresh.boot()
    st = fresh.load()
    # Committed or not is unknown: the newer image goes on trial with v1 behind it; counter never lower.
    assert (decision.slot, decision.trial, st.installed_counter) == ("b", True, 2)
    assert decision.event is not None and decision.event.startswith("recovered")
    assert_runs(store, kit.v2)
    fresh.revert("health check failed after recovery")
    assert_runs(store, kit.v1)


def test_recovery_ignores_a_partially_written_slot(store: SlotStore, kit) -> None:
    def dropping(offset: int) -> Iterator[bytes]:
        yield kit.v2[offset : offset + 700]
        raise ConnectionError("link dropped")

    with pytest.raises(ConnectionError):
        installer(store, kit).install(kit.release_v2.manifest_bytes, artifact=dropping)
    for p in store.root.glob("state.*.json"):
        p.unlink()
    decision = SlotStore(store.root, capacity=CAPACITY).boot()
    assert (decision.slot, decision.trial) == ("a", False)
    assert_runs(store, kit.v1)


def test_nothing_recoverable_is_a_named_error(store: SlotStore, kit) -> None:
    for p in [*store.root.glob("state.*.json"), *store.root.glob("*.meta.json")]:
        p.write_bytes(b"\x00" * 10)
    with pytest.raises(NoBootableSlotError):
        SlotStore(store.root, capacity=CAPACITY).boot()
    assert slot_sha(store, "a") == sha(kit.v1), "recovery must not touch the slots"


def test_unprovisioned_directory_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(NotProvisionedError):
        SlotStore(tmp_path / "empty", capacity=CAPACITY).boot()


def test_corrupt_active_slot_falls_back_to_the_previous_image(store: SlotStore, kit) -> None:
    full_install(store, kit)
    store.boot()
    store.commit()
    data = bytearray(store.slot_path("b").read_bytes())
    data[200] ^= 0x10
    store.slot_path("b").write_bytes(bytes(data))
    decision = SlotStore(store.root, capacity=CAPACITY).boot()
    assert decision.slot == "a" and decision.event is not None and decision.event.startswith("fallback")
    assert SlotStore(store.root, capacity=CAPACITY).load().installed_counter == 2
    assert_runs(store, kit.v1)


def test_tampered_state_pointing_the_writer_at_the_active_slot_is_refused(store: SlotStore, kit) -> None:
    inst = installer(store, kit)
    inst.plan(kit.release_v2.manifest_bytes, allow_delta=False)
    st = store.load()
    assert st.pending is not None
    # A well-formed, correctly checksummed record that nonetheless says "write slot a" (the active one).
    bad = st.model_copy(
        update={"generation": st.generation + 1, "pending": st.pending.model_copy(update={"slot": "a"})}
    )
    write_state(store.root, bad)
    fresh = SlotStore(store.root, capacity=CAPACITY)
    with pytest.raises(InstallStateError):
        fresh.open_slot_writer()
    assert slot_sha(store, "a") == sha(kit.v1)


def test_resume_of_an_expired_manifest_is_refused_and_dropped(store: SlotStore, kit) -> None:
    from datetime import UTC, datetime, timedelta

    from ota.errors import ExpiredManifestError

    def dropping(offset: int) -> Iterator[bytes]:
        yield kit.v2[offset : offset + 700]
        raise ConnectionError("link dropped")

    with pytest.raises(ConnectionError):
        installer(store, kit).install(kit.release_v2.manifest_bytes, artifact=dropping)
    assert store.load().pending is not None
    # The device was off for longer than the manifest's validity: the resume re-verifies and refuses.
    with pytest.raises(ExpiredManifestError):
        installer(store, kit).resume(artifact=dropping, now=datetime.now(UTC) + timedelta(days=400))
    st = store.load()
    assert (st.pending, st.active, slot_sha(store, "a")) == (None, "a", sha(kit.v1))
    assert_runs(store, kit.v1)
