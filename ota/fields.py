"""Constrained field types shared by the signed OTA documents (manifest, key certificate, revocation list)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, ValidationError

from ota.errors import ManifestFormatError

M = TypeVar("M", bound=BaseModel)

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
KeyIdHex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
PublicKeyHex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
SignatureHex = Annotated[str, Field(pattern=r"^[0-9a-f]{128}$")]

SEMVER_RE = re.compile(
    r"^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
SemVer = Annotated[str, Field(max_length=64, pattern=SEMVER_RE.pattern)]


def _utc_z(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# Timestamps travel as RFC 3339 strings; timezone-aware only (a naive time is ambiguous on a device).
Timestamp = Annotated[AwareDatetime, PlainSerializer(_utc_z, return_type=str)]


def format_timestamp(value: datetime) -> str:
    """Whole seconds, UTC, ``Z`` suffix: the one way TinyFleet writes timestamps it signs."""
    return _utc_z(value.astimezone(UTC))


def semver_key(version: str) -> tuple[Any, ...]:
    """Sort key implementing semver 2.0 precedence (build metadata ignored)."""
    m = SEMVER_RE.match(version)
    if m is None:
        raise ValueError(f"not a semantic version: {version!r}")
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[4]
    if pre is None:
        return (major, minor, patch, 1, ())
    # numeric identifiers sort before alphanumeric ones, and numerically among themselves
    idents = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, 0, idents)


class SignedModel(BaseModel):
    """Base of the signed documents: strict types, unknown fields refused unless stripped beforehand."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(document)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def validate_json_as(model: type[M], document: dict[str, Any], *, what: str) -> M:
    """Validate an already-parsed document with JSON-mode strictness (RFC 3339 strings for timestamps)."""
    import json

    try:
        return model.model_validate_json(json.dumps(document), strict=True)
    except ValidationError as exc:
        raise ManifestFormatError(f"{what}: {describe_validation_error(exc)}") from None
