"""The release manifest: what a device needs to decide whether, and how, to install a model artifact.

Schema versioning (``schema_version`` = "MAJOR.MINOR"):

* MAJOR other than 1 -> :class:`UnsupportedSchemaError` (the meaning of fields may have changed).
* MINOR equal to what this code knows (0) -> unknown fields are a :class:`ManifestFormatError`
  (a same-version manifest with extra fields is malformed or tampered with).
* MINOR newer than this code knows -> unknown fields (top level, in ``deltas`` items and in the
  certificate) are dropped before validation and listed in ``Manifest.ignored_fields``; minor
  versions may only *add* optional information. They are still covered by the signature, because the
  signature is checked over the received document (see :mod:`ota.canonical`).

Parsing here is structural only; whether to trust the manifest is decided in :mod:`ota.trust`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from ota.certificates import KeyCertificate
from ota.errors import ManifestFormatError, UnsupportedSchemaError
from ota.fields import (
    KeyIdHex,
    SemVer,
    Sha256Hex,
    SignatureHex,
    SignedModel,
    Timestamp,
    validate_json_as,
)

SCHEMA_MAJOR = 1
SCHEMA_MINOR = 0
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"

# Sanity bounds: anything outside is refused before it can drive an allocation or a loop.
MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024  # 1 GiB; the largest slot (pi-4) is 256 MiB
MIN_PATCH_BYTES = 32  # a BSDIFF40 header alone is 32 bytes
MAX_DELTAS = 32
MAX_HARDWARE_CLASSES = 16
MAX_COUNTER = 2**53 - 1  # exactly representable in every JSON implementation

Variant = Literal["float32", "float16", "dynamic_int8", "full_int8"]


class DeltaInfo(SignedModel):
    """A bsdiff4 patch turning the artifact of an older release into this release's artifact."""

    from_version: SemVer
    from_counter: int = Field(ge=1, le=MAX_COUNTER)
    base_sha256: Sha256Hex  # sha256 of the bytes the patch must be applied to
    patch_sha256: Sha256Hex
    patch_length: int = Field(ge=MIN_PATCH_BYTES, le=MAX_ARTIFACT_BYTES)


class Manifest(SignedModel):
    schema_version: str = Field(pattern=r"^\d{1,4}\.\d{1,4}$")
    model: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    version: SemVer
    counter: int = Field(ge=1, le=MAX_COUNTER)  # anti-rollback: strictly increasing per model
    hardware_classes: tuple[str, ...] = Field(min_length=1, max_length=MAX_HARDWARE_CLASSES)
    variant: Variant
    artifact_sha256: Sha256Hex
    artifact_length: int = Field(ge=1, le=MAX_ARTIFACT_BYTES)
    deltas: tuple[DeltaInfo, ...] = Field(default=(), max_length=MAX_DELTAS)
    min_agent_version: SemVer
    created: Timestamp
    expires: Timestamp
    key_id: KeyIdHex
    certificate: KeyCertificate
    signature: SignatureHex

    _ignored_fields: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        for hw in self.hardware_classes:
            if not (1 <= len(hw) <= 32) or not hw.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"hardware class {hw[:40]!r} is not a valid name")
        if len(set(self.hardware_classes)) != len(self.hardware_classes):
            raise ValueError("hardware_classes has duplicates")
        if self.expires <= self.created:
            raise ValueError("expires must be later than created")
        bases = [d.base_sha256 for d in self.deltas]
        if len(set(bases)) != len(bases):
            raise ValueError("two deltas from the same base")
        for d in self.deltas:
            if d.from_counter >= self.counter:
                raise ValueError(f"delta from counter {d.from_counter} is not older than {self.counter}")
            if d.base_sha256 == self.artifact_sha256:
                raise ValueError("delta base equals the artifact itself")
            if d.patch_length > self.artifact_length + 1024 * 1024:
                raise ValueError(f"patch length {d.patch_length} is absurd for {self.artifact_length} bytes")
        return self

    @property
    def ignored_fields(self) -> tuple[str, ...]:
        """Fields of a newer minor schema that this code dropped (covered by the signature anyway)."""
        return self._ignored_fields


def _strip_unknown(doc: dict[str, Any], fields: set[str], where: str, dropped: list[str]) -> dict[str, Any]:
    kept = {}
    for k, v in doc.items():
        if k in fields:
            kept[k] = v
        else:
            dropped.append(f"{where}{k}")
    return kept


def check_schema_version(doc: dict[str, Any]) -> tuple[int, int]:
    raw = doc.get("schema_version")
    if not isinstance(raw, str):
        raise ManifestFormatError("schema_version missing or not a string")
    major_s, sep, minor_s = raw.partition(".")
    if not sep or not major_s.isdigit() or not minor_s.isdigit() or len(raw) > 9 or not raw.isascii():
        raise ManifestFormatError(f"schema_version {raw[:20]!r} is not MAJOR.MINOR")
    major, minor = int(major_s), int(minor_s)
    if major != SCHEMA_MAJOR:
        raise UnsupportedSchemaError(f"schema_version {raw}: this agent reads major {SCHEMA_MAJOR} only")
    return major, minor


def manifest_from_document(doc: dict[str, Any]) -> Manifest:
    """Structural validation of a parsed manifest (no trust decision). Raises named errors only."""
    _, minor = check_schema_version(doc)
    dropped: list[str] = []
    if minor > SCHEMA_MINOR:
        doc = _strip_unknown(doc, set(Manifest.model_fields), "", dropped)
        if isinstance(doc.get("certificate"), dict):
            doc["certificate"] = _strip_unknown(
                doc["certificate"], set(KeyCertificate.model_fields), "certificate.", dropped
            )
        if isinstance(doc.get("deltas"), list):
            delta_fields = set(DeltaInfo.model_fields)
            doc["deltas"] = [
                _strip_unknown(d, delta_fields, f"deltas.{i}.", dropped) if isinstance(d, dict) else d
                for i, d in enumerate(doc["deltas"])
            ]
    manifest = validate_json_as(Manifest, doc, what="manifest")
    manifest._ignored_fields = tuple(dropped)
    return manifest
