"""Device request/response models."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from firmware_stubs.hardware_profiles import PROFILES
from fleet_server.api.schemas.common import PRINTABLE_PATTERN, PageQuery, StrictModel
from fleet_server.db.device_store import TAG_KEY_PATTERN, TAG_VALUE_MAX_LEN, check_hardware_class
from telemetry.topics import DEVICE_ID_MAX_LEN, DEVICE_ID_PATTERN, validate_device_id

# telemetry.topics gives the clear message; pattern/maxLength are repeated in the schema for clients.
DeviceId = Annotated[
    str,
    AfterValidator(validate_device_id),
    Field(json_schema_extra={"pattern": DEVICE_ID_PATTERN, "maxLength": DEVICE_ID_MAX_LEN}),
]
HardwareClass = Annotated[
    str, AfterValidator(check_hardware_class), Field(json_schema_extra={"enum": sorted(PROFILES)})
]
TagKey = Annotated[str, StringConstraints(pattern=TAG_KEY_PATTERN)]
TagValue = Annotated[str, StringConstraints(max_length=TAG_VALUE_MAX_LEN, pattern=PRINTABLE_PATTERN)]


class DeviceCreate(StrictModel):
    id: DeviceId = Field(description="Device id; also its MQTT username.")
    hardware_class: HardwareClass
    tags: dict[TagKey, TagValue] = Field(default_factory=dict)


class DevicePatch(StrictModel):
    tags: dict[TagKey, TagValue | None] = Field(
        description="Merge patch: a string sets the tag, null removes it; other tags stay."
    )


class DeviceListQuery(PageQuery):
    hardware_class: HardwareClass | None = None
    tag: list[Annotated[str, StringConstraints(max_length=200, pattern=PRINTABLE_PATTERN)]] = Field(
        default_factory=list, description="key=value; repeat for several (all must match)."
    )


class DeviceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    hardware_class: str
    tags: dict[str, str]
    created_at: dt.datetime
    updated_at: dt.datetime
    last_seen_at: dt.datetime | None
    current_model: str | None
    current_version: str | None
    active_slot: str | None
    fallback_level: int | None


class DeviceCredential(BaseModel):
    username: str = Field(description="MQTT username and HTTP Basic user: the device id.")
    password: str = Field(
        description="The device secret. Shown only in this response; store it on the device."
    )
    mqtt_host: str
    mqtt_port: int


class DeviceProvisioned(BaseModel):
    device: DeviceOut
    credential: DeviceCredential
