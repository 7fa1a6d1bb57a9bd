"""Release request/response models."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fleet_server.api.schemas.common import PageQuery, SafeText, StrictModel
from fleet_server.api.schemas.devices import HardwareClass

Variant = Literal["float32", "float16", "dynamic_int8", "full_int8"]
ReleaseState = Literal["active", "withdrawn"]
ModelNameField = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")
]
ReleaseIdField = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]


class ReleaseCreate(StrictModel):
    model: ModelNameField = Field(description="Model name (as registered in the catalog).")
    version: SafeText(32, 1) = Field(description="Converted model version, e.g. 1.2.0 (semver).")  # type: ignore[valid-type]
    variant: Variant = Field(description="Which converter variant the release ships.")
    hardware_classes: list[HardwareClass] = Field(min_length=1, max_length=16)
    expires_in_days: int | None = Field(
        default=None, ge=1, le=365, description="Manifest expiry; default from settings (30 days)."
    )


class ReleaseListQuery(PageQuery):
    model: ModelNameField | None = Field(default=None, description="Only releases of this model.")
    state: ReleaseState | None = None


class DeltaOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    from_version: str
    from_counter: int
    base_sha256: str
    patch_sha256: str
    patch_length: int


class ReleaseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description='"<model>-<counter>"; the release id on the wire.')
    model_name: str
    version: str
    counter: int
    variant: str
    hardware_classes: list[str]
    artifact_sha256: str
    artifact_length: int
    manifest_sha256: str
    manifest_length: int
    key_id: str = Field(description="Release key that signed the manifest.")
    expires_at: dt.datetime
    state: ReleaseState
    created_at: dt.datetime
    created_by: str
    deltas: list[DeltaOut]


class ReleaseFileOut(BaseModel):
    name: str = Field(description="manifest | artifact | report | golden | patch-<base_sha256>")
    sha256: str
    length: int
    download_path: str = Field(description="Device route (HTTP Basic, Range) serving the file.")


class DeltaDecisionOut(BaseModel):
    from_version: str
    patch_length: int
    full_compressed_length: int
    ratio: float = Field(description="patch length / zlib-9 compressed full artifact")
    shipped: bool


class ReleaseDetail(ReleaseOut):
    manifest: dict[str, Any] = Field(description="The signed manifest document as devices receive it.")
    files: list[ReleaseFileOut]
    decisions: list[DeltaDecisionOut] = Field(description="Every delta considered, shipped or not.")
