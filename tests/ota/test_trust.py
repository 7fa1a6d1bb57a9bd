"""The trust decision: every reason to refuse a manifest or an artifact, each with its named error."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ota import keys
from ota.canonical import canonical_bytes, encode_signed
from ota.certificates import certify_key
from ota.errors import (
    AgentTooOldError,
    ArtifactTooLargeError,
    BadSignatureError,
    DowngradeError,
    ExpiredManifestError,
    HashMismatchError,
    LengthMismatchError,
    ManifestFormatError,
    OtaError,
    PatchBaseMismatchError,
    RevocationListError,
    RevokedKeyError,
    UnknownKeyError,
    UnsupportedSchemaError,
    WrongHardwareClassError,
)
from ota.manifest import Manifest
from ota.release import PreviousArtifact, ReleaseSigner, build_release, sign_manifest_document
from ota.revocation import build_revocation_list
from ota.trust import (
    DeviceTrust,
    accept_revocations,
    check_slot_capacity,
    select_patch,
    verify_artifact,
    verify_manifest,
    verify_patch,
    verify_patch_base,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
OLD = os.urandom(20_000)
NEW = OLD[:5000] + os.urandom(64) + OLD[5064:]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def root() -> keys.Ed25519PrivateKey:
    return keys.generate_private_key()


@pytest.fixture(scope="module")
def signer(root: keys.Ed25519PrivateKey) -> ReleaseSigner:
    return ReleaseSigner.certified_by(root, not_before=NOW - timedelta(days=1))


def device(root: keys.Ed25519PrivateKey, **kw: Any) -> DeviceTrust:
    base: dict[str, Any] = {
        "root_public_keys": [keys.raw_public_key(root)],
        "hardware_class": "esp32-s3",
        "installed_counter": 1,
    }
    base.update(kw)
    return DeviceTrust(**base)


def release(signer: ReleaseSigner, artifact: bytes = NEW, counter: int = 2, **kw: Any) -> bytes:
    args: dict[str, Any] = {
        "model": "kws",
        "version": "1.1.0",
        "counter": counter,
        "hardware_classes": ["esp32-s3", "cortex-m4f"],
        "variant": "full_int8",
        "signer": signer,
        "previous": [PreviousArtifact("1.0.0", 1, OLD)],
        "created": NOW - timedelta(hours=1),
    }
    args.update(kw)
    return build_release(artifact, **args).manifest_bytes


def resigned(data: bytes, signer: ReleaseSigner, **changes: Any) -> bytes:
    """A manifest with some fields changed and then properly signed again (a 'well-signed bad' manifest)."""
    doc = json.loads(data)
    doc.update(changes)
    return sign_manifest_document(doc, signer)


def tampered(data: bytes, **changes: Any) -> bytes:
    """Fields changed after signing (an attacker without the key)."""
    doc = json.loads(data)
    doc.update(changes)
    return encode_signed(doc)


# --- the happy path -------------------------------------------------------------------------------------


def test_valid_release_verifies_end_to_end(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    m = verify_manifest(release(signer), device(root), now=NOW)
    assert isinstance(m, Manifest)
    assert (m.counter, m.version, m.variant, m.artifact_length) == (2, "1.1.0", "full_int8", len(NEW))
    verify_artifact(m, sha256_hex=sha(NEW), length=len(NEW))
    check_slot_capacity(m, len(NEW))
    delta = select_patch(m, installed_sha256=sha(OLD))
    assert delta is not None and delta.from_version == "1.0.0"
    verify_patch_base(delta, base_sha256=sha(OLD))
    assert select_patch(m, installed_sha256=sha(b"something else")) is None


def test_manifest_may_travel_pretty_printed(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    pretty = json.dumps(json.loads(release(signer)), indent=2).encode()
    assert verify_manifest(pretty, device(root), now=NOW).counter == 2


# --- malformed input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b[:-1],
        lambda b: b"",
        lambda b: b"{not json",
        lambda b: b"[1, 2, 3]",
        lambda b: b"\xff\xfe" + b,
        lambda b: b.replace(b'"counter":2', b'"counter":2.0'),
        lambda b: b.replace(b'"counter":2', b'"counter":NaN'),
        lambda b: b[:-1] + b',"counter":3}',  # duplicate member
        lambda b: b" " * 70_000 + b,  # over the size limit
    ],
    ids=["half", "last-byte", "empty", "invalid", "array", "not-utf8", "float", "nan", "dup-key", "huge"],
)
def test_malformed_bytes(root: keys.Ed25519PrivateKey, signer: ReleaseSigner, mangle: Any) -> None:
    with pytest.raises(ManifestFormatError):
        verify_manifest(mangle(release(signer)), device(root), now=NOW)


@pytest.mark.parametrize(
    "changes",
    [
        {"counter": "3"},
        {"counter": True},
        {"artifact_length": 10**12},
        {"artifact_length": 0},
        {"artifact_length": -5},
        {"counter": 2**60},
        {"artifact_sha256": "XYZ"},
        {"hardware_classes": []},
        {"hardware_classes": "esp32-s3"},
        {"variant": "int4"},
        {"version": "1.1"},
        {"model": "x" * 500},
        {"expires": "tomorrow"},
        {"expires": "2026-11-24T12:00:00"},  # naive timestamp
        {"created": "2027-01-01T00:00:00Z", "expires": "2026-12-01T00:00:00Z"},
        {"deltas": [{"from_version": "1.0.0"}]},
        {
            "deltas": [
                {
                    "from_version": "1.0.0",
                    "from_counter": 1,
                    "base_sha256": "a" * 64,
                    "patch_sha256": "b" * 64,
                    "patch_length": 10**15,
                }
            ]
        },
        {"surprise": 1},  # unknown field at the same minor version
    ],
    ids=lambda c: ",".join(c),
)
def test_well_signed_but_malformed(
    root: keys.Ed25519PrivateKey, signer: ReleaseSigner, changes: dict
) -> None:
    """Wrong types, absurd lengths, bad formats: refused even though the signature is fine."""
    with pytest.raises(ManifestFormatError):
        verify_manifest(resigned(release(signer), signer, **changes), device(root), now=NOW)


def test_missing_field(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    doc = json.loads(release(signer))
    del doc["expires"]
    with pytest.raises(ManifestFormatError, match="expires"):
        verify_manifest(sign_manifest_document(doc, signer), device(root), now=NOW)


# --- schema versions ------------------------------------------------------------------------------------


def test_unknown_major_schema(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    with pytest.raises(UnsupportedSchemaError):
        verify_manifest(resigned(release(signer), signer, schema_version="2.0"), device(root), now=NOW)
    with pytest.raises(ManifestFormatError):
        verify_manifest(resigned(release(signer), signer, schema_version="one"), device(root), now=NOW)


def test_newer_minor_extra_fields_ignored_but_signed(
    root: keys.Ed25519PrivateKey, signer: ReleaseSigner
) -> None:
    doc = json.loads(release(signer))
    doc["schema_version"] = "1.3"
    doc["rollout_hint"] = "canary-first"
    doc["deltas"][0]["compression"] = "bz2"
    data = sign_manifest_document(doc, signer)
    m = verify_manifest(data, device(root), now=NOW)
    assert set(m.ignored_fields) == {"rollout_hint", "deltas.0.compression"}
    # the ignored field is still covered by the signature
    with pytest.raises(BadSignatureError):
        verify_manifest(tampered(data, rollout_hint="all-at-once"), device(root), now=NOW)


# --- signatures and keys --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes", [{"counter": 99}, {"artifact_sha256": "0" * 64}, {"hardware_classes": ["pi-4"]}], ids=str
)
def test_tampered_after_signing(root: keys.Ed25519PrivateKey, signer: ReleaseSigner, changes: dict) -> None:
    with pytest.raises(BadSignatureError):
        verify_manifest(tampered(release(signer), **changes), device(root), now=NOW)


def test_bit_flipped_signature(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    doc = json.loads(release(signer))
    sig = bytearray(bytes.fromhex(doc["signature"]))
    sig[10] ^= 0x01
    with pytest.raises(BadSignatureError):
        verify_manifest(tampered(release(signer), signature=sig.hex()), device(root), now=NOW)


def test_release_key_not_certified_by_device_root(root: keys.Ed25519PrivateKey) -> None:
    other_root = keys.generate_private_key()
    rogue = ReleaseSigner.certified_by(other_root, not_before=NOW - timedelta(days=1))
    with pytest.raises(UnknownKeyError):
        verify_manifest(release(rogue), device(root), now=NOW)


def test_self_signed_release_key(root: keys.Ed25519PrivateKey) -> None:
    """A release key that certifies itself is not a root the device holds."""
    k = keys.generate_private_key()
    rogue = ReleaseSigner(k, certify_key(k, k, not_before=NOW - timedelta(days=1)))
    with pytest.raises(UnknownKeyError):
        verify_manifest(release(rogue), device(root), now=NOW)


def test_forged_certificate(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    """Attacker with their own key copies root's issuer id into a certificate root never signed."""
    k = keys.generate_private_key()
    cert = certify_key(k, k, not_before=NOW - timedelta(days=1))
    cert["issuer_key_id"] = keys.key_id(root)
    with pytest.raises(BadSignatureError):
        verify_manifest(release(ReleaseSigner(k, cert)), device(root), now=NOW)


def test_certificate_extended_after_signing(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    cert = dict(signer.certificate, not_after="2099-01-01T00:00:00Z")
    with pytest.raises(BadSignatureError):
        verify_manifest(release(ReleaseSigner(signer.private_key, cert)), device(root), now=NOW)


def test_certificate_for_other_role(root: keys.Ed25519PrivateKey) -> None:
    k = keys.generate_private_key()
    s = ReleaseSigner(k, certify_key(root, k, role="telemetry", not_before=NOW - timedelta(days=1)))
    with pytest.raises(UnknownKeyError, match="role"):
        verify_manifest(release(s), device(root), now=NOW)


def test_manifest_key_id_not_the_certified_key(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    doc = json.loads(release(signer))
    doc["key_id"] = "ab" * 32
    doc["signature"] = keys.sign(signer.private_key, canonical_bytes(doc)).hex()
    with pytest.raises(UnknownKeyError):
        verify_manifest(encode_signed(doc), device(root), now=NOW)


def test_second_root_key_on_device(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    backup_root = keys.generate_private_key()
    dev = device(root, root_public_keys=[keys.raw_public_key(backup_root), keys.raw_public_key(root)])
    assert verify_manifest(release(signer), dev, now=NOW).counter == 2


# --- rotation and revocation ----------------------------------------------------------------------------


def test_rotation_new_release_key_needs_no_device_change(
    root: keys.Ed25519PrivateKey, signer: ReleaseSigner
) -> None:
    dev = device(root)
    verify_manifest(release(signer), dev, now=NOW)
    successor = ReleaseSigner.certified_by(root, not_before=NOW - timedelta(hours=2))
    assert successor.key_id != signer.key_id
    m = verify_manifest(release(successor, counter=3), dev, now=NOW)  # same DeviceTrust object
    assert m.key_id == successor.key_id


def test_revoked_key_refused_although_certificate_valid(root: keys.Ed25519PrivateKey) -> None:
    compromised = ReleaseSigner.certified_by(root, not_before=NOW - timedelta(days=1))
    dev = device(root)
    assert verify_manifest(release(compromised), dev, now=NOW)  # certificate is fine
    rl = build_revocation_list(root, serial=1, revoked_key_ids=[compromised.key_id], issued_at=NOW)
    dev = accept_revocations(rl, dev)
    with pytest.raises(RevokedKeyError):
        verify_manifest(release(compromised, counter=5), dev, now=NOW)
    # the replacement key, certified by the same root, works on the same device
    replacement = ReleaseSigner.certified_by(root, not_before=NOW - timedelta(hours=1))
    assert verify_manifest(release(replacement, counter=5), dev, now=NOW).counter == 5


def test_older_revocation_list_refused_and_state_kept(root: keys.Ed25519PrivateKey) -> None:
    bad = keys.key_id(keys.generate_private_key())
    dev = accept_revocations(build_revocation_list(root, serial=7, revoked_key_ids=[bad]), device(root))
    older = build_revocation_list(root, serial=6, revoked_key_ids=[])  # would un-revoke
    with pytest.raises(RevocationListError, match=r"serial 6 < persisted 7"):
        accept_revocations(older, dev)
    assert dev.revocations is not None and dev.revocations.serial == 7 and dev.revocations.is_revoked(bad)
    same_serial_other = build_revocation_list(root, serial=7, revoked_key_ids=[])
    with pytest.raises(RevocationListError, match="serial 7"):
        accept_revocations(same_serial_other, dev)
    # the very same list again (re-delivered beside the next manifest) is fine
    again = accept_revocations(dev.revocations.to_bytes(), dev)
    assert again.revocations == dev.revocations
    # what the device persisted re-verifies from scratch after a reboot
    rebooted = accept_revocations(dev.revocations.to_bytes(), device(root))
    assert rebooted.revocations is not None and rebooted.revocations.is_revoked(bad)


@pytest.mark.parametrize("case", ["other-root", "tampered", "truncated", "garbage"])
def test_bad_revocation_lists(root: keys.Ed25519PrivateKey, case: str) -> None:
    good = build_revocation_list(root, serial=3, revoked_key_ids=["aa" * 32])
    data = {
        "other-root": build_revocation_list(keys.generate_private_key(), serial=9, revoked_key_ids=[]),
        "tampered": tampered(good, revoked_key_ids=[]),
        "truncated": good[:-3],
        "garbage": b"\x00\x01",
    }[case]
    dev = device(root)
    with pytest.raises(RevocationListError):
        accept_revocations(data, dev)
    assert dev.revocations is None


# --- time -----------------------------------------------------------------------------------------------


def test_expired_manifest(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    data = release(signer, expires_in=timedelta(days=1))
    verify_manifest(data, device(root), now=NOW + timedelta(hours=20))
    with pytest.raises(ExpiredManifestError):
        verify_manifest(data, device(root), now=NOW + timedelta(days=2))


def test_manifest_from_the_future(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    with pytest.raises(ExpiredManifestError, match="future"):
        verify_manifest(release(signer, created=NOW + timedelta(days=3)), device(root), now=NOW)


def test_expired_certificate(root: keys.Ed25519PrivateKey) -> None:
    short = ReleaseSigner.certified_by(root, not_before=NOW - timedelta(days=10), valid_for=timedelta(days=5))
    with pytest.raises(ExpiredManifestError, match="certificate"):
        verify_manifest(release(short), device(root), now=NOW)


def test_manifest_dated_outside_certificate(root: keys.Ed25519PrivateKey) -> None:
    fresh = ReleaseSigner.certified_by(root, not_before=NOW - timedelta(minutes=5))
    backdated = release(fresh, created=NOW - timedelta(days=3), expires_in=timedelta(days=30))
    with pytest.raises(ExpiredManifestError, match="certificate"):
        verify_manifest(backdated, device(root), now=NOW)


# --- target, rollback, agent ----------------------------------------------------------------------------


def test_other_hardware_class(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    with pytest.raises(WrongHardwareClassError):
        verify_manifest(release(signer), device(root, hardware_class="pi-4"), now=NOW)


@pytest.mark.parametrize("installed", [2, 3, 100])
def test_replay_or_downgrade(root: keys.Ed25519PrivateKey, signer: ReleaseSigner, installed: int) -> None:
    """After installing counter 2, the same manifest (replay) or an older one is refused."""
    with pytest.raises(DowngradeError):
        verify_manifest(release(signer, counter=2), device(root, installed_counter=installed), now=NOW)


def test_agent_too_old(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    data = release(signer, min_agent_version="0.10.0")
    with pytest.raises(AgentTooOldError):
        verify_manifest(data, device(root, agent_version="0.9.5"), now=NOW)
    verify_manifest(data, device(root, agent_version="0.10.0"), now=NOW)
    with pytest.raises(AgentTooOldError):  # a pre-release precedes its release
        verify_manifest(data, device(root, agent_version="0.10.0-rc.1"), now=NOW)


# --- artifact checks ------------------------------------------------------------------------------------


def test_bit_flipped_and_truncated_artifact(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    m = verify_manifest(release(signer), device(root), now=NOW)
    flipped = bytearray(NEW)
    flipped[1234] ^= 0x10
    with pytest.raises(HashMismatchError):
        verify_artifact(m, sha256_hex=sha(bytes(flipped)), length=len(flipped))
    with pytest.raises(LengthMismatchError):
        verify_artifact(m, sha256_hex=sha(NEW[:-1]), length=len(NEW) - 1)


def test_slot_capacity(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    m = verify_manifest(release(signer), device(root), now=NOW)
    with pytest.raises(ArtifactTooLargeError):
        check_slot_capacity(m, len(NEW) - 1)


def test_patch_file_and_base_checks(root: keys.Ed25519PrivateKey, signer: ReleaseSigner) -> None:
    m = verify_manifest(release(signer), device(root), now=NOW)
    delta = m.deltas[0]
    with pytest.raises(PatchBaseMismatchError):
        verify_patch_base(delta, base_sha256=sha(NEW))
    with pytest.raises(LengthMismatchError):
        verify_patch(delta, sha256_hex=delta.patch_sha256, length=delta.patch_length + 1)
    with pytest.raises(HashMismatchError):
        verify_patch(delta, sha256_hex="0" * 64, length=delta.patch_length)


def test_all_refusals_carry_distinct_codes() -> None:
    from ota.errors import ALL_ERRORS

    codes = [e.code for e in ALL_ERRORS]
    assert len(set(codes)) == len(codes)
    assert all(issubclass(e, OtaError) for e in ALL_ERRORS)


# --- server-side builder refuses what devices would refuse ------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [{"hardware_classes": ["esp-99"]}, {"hardware_classes": ["cortex-m4f"], "variant": "float32"}],
    ids=["unknown-class", "variant-unsupported"],
)
def test_build_release_refuses_impossible_targets(signer: ReleaseSigner, kw: dict) -> None:
    with pytest.raises(ValueError):
        release(signer, **kw)


def test_build_release_too_large_for_slot(signer: ReleaseSigner) -> None:
    with pytest.raises(ValueError, match="slot"):
        release(signer, artifact=b"\0" * (384 * 1024 + 1), hardware_classes=["cortex-m4f"], previous=[])
