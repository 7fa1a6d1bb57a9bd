"""Server side: build and sign a release manifest for an artifact, with deltas from older versions.

The server never needs device code; it calls :func:`build_release` with the artifact bytes, the
artifacts of versions still in the field (:class:`PreviousArtifact`) and a :class:`ReleaseSigner`
(a release private key plus the root-signed certificate of its public key). The result carries the
wire bytes of the manifest and the patch files to publish beside it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from firmware_stubs.hardware_profiles import PROFILES
from ota import keys
from ota.canonical import canonical_bytes, encode_signed, parse_document
from ota.certificates import certify_key
from ota.delta import DeltaPolicy, compressed_size, make_patch
from ota.fields import format_timestamp
from ota.manifest import SCHEMA_VERSION, Manifest, manifest_from_document


@dataclass(frozen=True)
class ReleaseSigner:
    """A release key and the root-signed certificate (JSON document) that vouches for it."""

    private_key: keys.Ed25519PrivateKey
    certificate: dict[str, Any]

    @classmethod
    def certified_by(
        cls,
        root_key: keys.Ed25519PrivateKey,
        release_key: keys.Ed25519PrivateKey | None = None,
        *,
        not_before: datetime | None = None,
        valid_for: timedelta = timedelta(days=365),
    ) -> ReleaseSigner:
        """Convenience: certify ``release_key`` (a fresh one if None) with ``root_key``."""
        release_key = release_key or keys.generate_private_key()
        cert = certify_key(root_key, release_key, not_before=not_before, valid_for=valid_for)
        return cls(private_key=release_key, certificate=cert)

    @property
    def key_id(self) -> str:
        return keys.key_id(self.private_key)

    def __post_init__(self) -> None:
        if self.certificate.get("key_id") != self.key_id:
            raise ValueError("the certificate is for a different key than the signer's private key")


@dataclass(frozen=True)
class PreviousArtifact:
    """An artifact of an older release still installed somewhere in the fleet."""

    version: str
    counter: int
    data: bytes


@dataclass(frozen=True)
class DeltaDecision:
    from_version: str
    patch_length: int
    full_compressed_length: int
    shipped: bool

    @property
    def ratio(self) -> float:
        return self.patch_length / self.full_compressed_length


@dataclass(frozen=True)
class SignedRelease:
    manifest_bytes: bytes
    manifest: Manifest
    patches: dict[str, bytes] = field(default_factory=dict)  # base artifact sha256 -> BSDIFF40 patch
    decisions: tuple[DeltaDecision, ...] = ()


def sign_manifest_document(document: dict[str, Any], signer: ReleaseSigner) -> bytes:
    """Fill in key id, certificate and signature of a manifest document; return its wire bytes.

    No validation: tests use this to produce well-signed but otherwise bad manifests.
    """
    doc = {k: v for k, v in document.items() if k != "signature"}
    doc["key_id"] = signer.key_id
    doc["certificate"] = signer.certificate
    doc["signature"] = keys.sign(signer.private_key, canonical_bytes(doc)).hex()
    return encode_signed(doc)


def build_release(
    artifact: bytes,
    *,
    model: str,
    version: str,
    counter: int,
    hardware_classes: list[str] | tuple[str, ...],
    variant: str,
    signer: ReleaseSigner,
    previous: list[PreviousArtifact] | tuple[PreviousArtifact, ...] = (),
    expires_in: timedelta = timedelta(days=30),
    delta_policy: DeltaPolicy = DeltaPolicy(),
    min_agent_version: str = "0.1.0",
    created: datetime | None = None,
) -> SignedRelease:
    """Sign a manifest for ``artifact``; compute a bsdiff4 delta from each previous artifact and keep
    those the policy accepts. Raises ValueError for requests a device would refuse anyway."""
    for hw in hardware_classes:
        profile = PROFILES.get(hw)
        if profile is None:
            raise ValueError(f"unknown hardware class {hw!r}; known: {', '.join(sorted(PROFILES))}")
        if variant not in profile.supported_variants:
            raise ValueError(f"{hw} does not run {variant} models")
        if len(artifact) > profile.model_flash_budget_bytes:
            slot = profile.model_flash_budget_bytes
            raise ValueError(f"{len(artifact)}-byte artifact exceeds the {slot}-byte {hw} slot")
    created_at = (created or datetime.now(UTC)).replace(microsecond=0)
    full_compressed = compressed_size(artifact)
    deltas: list[dict[str, Any]] = []
    patches: dict[str, bytes] = {}
    decisions: list[DeltaDecision] = []
    artifact_sha = hashlib.sha256(artifact).hexdigest()
    for prev in sorted(previous, key=lambda p: p.counter, reverse=True):
        base_sha = hashlib.sha256(prev.data).hexdigest()
        if prev.counter >= counter or base_sha == artifact_sha or base_sha in patches:
            continue  # not older, identical, or a duplicate: nothing to patch from
        patch = make_patch(prev.data, artifact)
        ships = delta_policy.ships(len(patch), full_compressed)
        decisions.append(DeltaDecision(prev.version, len(patch), full_compressed, ships))
        if ships:
            patches[base_sha] = patch
            deltas.append(
                {
                    "from_version": prev.version,
                    "from_counter": prev.counter,
                    "base_sha256": base_sha,
                    "patch_sha256": hashlib.sha256(patch).hexdigest(),
                    "patch_length": len(patch),
                }
            )
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": model,
        "version": version,
        "counter": counter,
        "hardware_classes": list(hardware_classes),
        "variant": variant,
        "artifact_sha256": artifact_sha,
        "artifact_length": len(artifact),
        "deltas": deltas,
        "min_agent_version": min_agent_version,
        "created": format_timestamp(created_at),
        "expires": format_timestamp(created_at + expires_in),
    }
    data = sign_manifest_document(doc, signer)
    # The server never publishes what a device would reject as malformed.
    manifest = manifest_from_document(parse_document(data))
    return SignedRelease(data, manifest, patches, tuple(decisions))
