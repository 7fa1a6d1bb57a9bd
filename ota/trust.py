"""The one place that decides whether an artifact may be installed.

Like python-tuf's ``TrustedMetadataSet`` this module holds every trust rule and does no I/O: the agent
downloads bytes, calls these functions in order and acts only on what they return. Each refusal is a
distinct :mod:`ota.errors` class with a stable ``code``.

Device-side order::

    device = accept_revocations(revocation_bytes, device)   # when a list arrives; persist the result
    manifest = verify_manifest(manifest_bytes, device)       # signatures, revocation, time, target, rollback
    check_slot_capacity(manifest, slot_capacity)
    delta = select_patch(manifest, installed_sha256=...)     # None -> download the full artifact
    verify_patch(delta, sha256_hex=..., length=...)          # the downloaded patch file
    verify_patch_base(delta, base_sha256=...)                # the bytes it will be applied to
    verify_artifact(manifest, sha256_hex=..., length=...)    # the full artifact (downloaded or patched)
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ota import keys
from ota.canonical import canonical_bytes, encode_signed, parse_document
from ota.certificates import RELEASE_ROLE, KeyCertificate
from ota.errors import (
    AgentTooOldError,
    ArtifactTooLargeError,
    BadSignatureError,
    DowngradeError,
    ExpiredManifestError,
    HashMismatchError,
    LengthMismatchError,
    ManifestFormatError,
    PatchBaseMismatchError,
    RevocationListError,
    RevokedKeyError,
    UnknownKeyError,
    WrongHardwareClassError,
)
from ota.fields import semver_key, validate_json_as
from ota.manifest import DeltaInfo, Manifest, manifest_from_document
from ota.revocation import RevocationList

# A device clock may run a little fast or slow; a manifest "created" further in the future than
# this is refused (it would otherwise extend its own life past a freeze).
CLOCK_SKEW = timedelta(minutes=10)

__all__ = [
    "CLOCK_SKEW",
    "DeviceTrust",
    "accept_revocations",
    "check_slot_capacity",
    "select_patch",
    "verify_artifact",
    "verify_manifest",
    "verify_patch",
    "verify_patch_base",
]


@dataclass
class DeviceTrust:
    """What a device knows and persists between updates."""

    root_public_keys: list[bytes]  # raw 32-byte Ed25519 public keys
    hardware_class: str
    installed_counter: int
    agent_version: str = "0.1.0"
    revocations: RevocationList | None = None

    def __post_init__(self) -> None:
        for k in self.root_public_keys:
            if not isinstance(k, bytes) or len(k) != keys.PUBLIC_KEY_BYTES:
                raise ValueError("root_public_keys must be raw 32-byte Ed25519 public keys")
        semver_key(self.agent_version)  # ValueError on a bad agent version: a programming error

    def root_by_id(self) -> dict[str, bytes]:
        return {keys.key_id(k): k for k in self.root_public_keys}


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _check_certificate(
    cert: KeyCertificate, cert_doc: dict[str, Any], device: DeviceTrust, now: datetime
) -> None:
    kid = cert.key_id[:16]
    root = device.root_by_id().get(cert.issuer_key_id)
    if root is None:
        raise UnknownKeyError(f"key {kid}… is certified by {cert.issuer_key_id[:16]}…, not a device root")
    if keys.key_id(cert.public_key_bytes) != cert.key_id:
        raise BadSignatureError("certificate key_id is not the sha256 of its public key")
    # over the certificate as received, like the manifest itself
    if not keys.verify_signature(root, bytes.fromhex(cert.signature), canonical_bytes(cert_doc)):
        raise BadSignatureError(f"certificate of key {kid}… is not validly signed by its root")
    if cert.role != RELEASE_ROLE:
        raise UnknownKeyError(f"key {kid}… is certified for role {cert.role!r}, not {RELEASE_ROLE!r}")
    if not (cert.not_before <= now < cert.not_after):
        raise ExpiredManifestError(
            f"certificate of key {cert.key_id[:16]}… is valid {cert.not_before:%Y-%m-%dT%H:%M:%SZ} to "
            f"{cert.not_after:%Y-%m-%dT%H:%M:%SZ}, now is {now:%Y-%m-%dT%H:%M:%SZ}"
        )


def verify_manifest(data: bytes, device: DeviceTrust, *, now: datetime | None = None) -> Manifest:
    """Parse and authenticate a manifest and decide whether this device may act on it.

    Order: structure -> key certificate chain to a device root -> revocation -> manifest signature ->
    validity in time -> hardware class -> anti-rollback counter -> agent version. Nothing from the
    manifest is acted on before its signature is checked.
    """
    now = _now(now)
    doc = parse_document(data, what="manifest")
    manifest = manifest_from_document(doc)
    cert = manifest.certificate
    if manifest.key_id != cert.key_id:
        raise UnknownKeyError(
            f"manifest key_id {manifest.key_id[:16]}… has no certificate (embedded one: {cert.key_id[:16]}…)"
        )
    _check_certificate(cert, doc["certificate"], device, now)
    if device.revocations is not None and device.revocations.is_revoked(cert.key_id):
        raise RevokedKeyError(
            f"key {cert.key_id[:16]}… was revoked (revocation list serial {device.revocations.serial})"
        )
    # The signature covers the document as received (incl. fields a newer minor added), not our model.
    signature = bytes.fromhex(manifest.signature)
    if not keys.verify_signature(cert.public_key_bytes, signature, canonical_bytes(doc)):
        raise BadSignatureError(f"manifest signature does not verify under key {cert.key_id[:16]}…")
    if now >= manifest.expires:
        raise ExpiredManifestError(f"manifest expired at {manifest.expires:%Y-%m-%dT%H:%M:%SZ}")
    if manifest.created > now + CLOCK_SKEW:
        raise ExpiredManifestError(f"manifest created in the future ({manifest.created:%Y-%m-%dT%H:%M:%SZ})")
    if not (cert.not_before <= manifest.created < cert.not_after):
        raise ExpiredManifestError("manifest was created outside its signing key's certificate validity")
    if device.hardware_class not in manifest.hardware_classes:
        raise WrongHardwareClassError(
            f"manifest targets {', '.join(manifest.hardware_classes)}; this device is {device.hardware_class}"
        )
    if manifest.counter <= device.installed_counter:
        raise DowngradeError(
            f"release counter {manifest.counter} is not above the installed {device.installed_counter} "
            "(downgrade or replayed manifest)"
        )
    if semver_key(device.agent_version) < semver_key(manifest.min_agent_version):
        raise AgentTooOldError(
            f"needs agent ≥ {manifest.min_agent_version}, this agent is {device.agent_version}"
        )
    return manifest


def accept_revocations(data: bytes, device: DeviceTrust) -> DeviceTrust:
    """Verify a root-signed revocation list and return the device state to persist with it.

    Refused (:class:`RevocationListError`) when malformed, not signed by a device root key, or older
    than (or, at an equal serial, different from) the persisted list. The input ``device`` is not modified.
    """
    try:
        doc = parse_document(data, what="revocation list")
        rl = validate_json_as(RevocationList, doc, what="revocation list")
    except ManifestFormatError as exc:
        raise RevocationListError(exc.message) from None
    root = device.root_by_id().get(rl.issuer_key_id)
    if root is None:
        raise RevocationListError(f"revocation list signed by {rl.issuer_key_id[:16]}…, not a device root")
    if not keys.verify_signature(root, bytes.fromhex(rl.signature), canonical_bytes(doc)):
        raise RevocationListError("revocation list signature does not verify")
    rl._wire = encode_signed(doc)
    held = device.revocations
    if held is not None:
        if rl.serial < held.serial:
            raise RevocationListError(f"revocation list serial {rl.serial} < persisted {held.serial}")
        if rl.serial == held.serial and rl != held:
            raise RevocationListError(f"a different revocation list with the persisted serial {rl.serial}")
    return replace(device, revocations=rl)


def _same_hex(a: str, b: str) -> bool:
    return hmac.compare_digest(a.lower().encode(), b.lower().encode())


def verify_artifact(manifest: Manifest, *, sha256_hex: str, length: int) -> None:
    """The full artifact (downloaded, or produced by a patch) is exactly what the manifest names."""
    if length != manifest.artifact_length:
        raise LengthMismatchError(f"artifact is {length} bytes, manifest says {manifest.artifact_length}")
    if not _same_hex(sha256_hex, manifest.artifact_sha256):
        raise HashMismatchError(f"artifact sha256 {sha256_hex[:16]}… ≠ {manifest.artifact_sha256[:16]}…")


def check_slot_capacity(manifest: Manifest, slot_capacity: int) -> None:
    if manifest.artifact_length > slot_capacity:
        raise ArtifactTooLargeError(
            f"artifact of {manifest.artifact_length} bytes does not fit the {slot_capacity}-byte slot"
        )


def select_patch(manifest: Manifest, *, installed_sha256: str) -> DeltaInfo | None:
    """The delta whose base is the installed artifact (smallest if several); None: get the full one."""
    matches = [d for d in manifest.deltas if _same_hex(d.base_sha256, installed_sha256)]
    return min(matches, key=lambda d: d.patch_length) if matches else None


def verify_patch(delta: DeltaInfo, *, sha256_hex: str, length: int) -> None:
    """The downloaded patch file is exactly the one the signed manifest names."""
    if length != delta.patch_length:
        raise LengthMismatchError(f"patch is {length} bytes, manifest says {delta.patch_length}")
    if not _same_hex(sha256_hex, delta.patch_sha256):
        raise HashMismatchError(f"patch sha256 {sha256_hex[:16]}… ≠ manifest {delta.patch_sha256[:16]}…")


def verify_patch_base(delta: DeltaInfo, *, base_sha256: str) -> None:
    if not _same_hex(base_sha256, delta.base_sha256):
        raise PatchBaseMismatchError(
            f"patch was made against {delta.base_sha256[:16]}… (version {delta.from_version}); "
            f"this base is {base_sha256[:16]}…"
        )
