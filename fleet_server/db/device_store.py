"""Device provisioning and queries: plain functions over a Session, used by the API and the CLI.

Validation of shapes (id syntax, tag syntax) happens at the boundary (pydantic); this module still
re-checks what a caller outside HTTP could get wrong (unknown hardware class, tag count) so that every
way in enforces the same rules. Functions never commit: the caller owns the transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from firmware_stubs.hardware_profiles import PROFILES
from fleet_server.auth import hash_device_secret, new_secret
from fleet_server.db.devices import Device
from telemetry.topics import validate_device_id

TAG_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
TAG_VALUE_MAX_LEN = 128
_TAG_KEY_RE = re.compile(TAG_KEY_PATTERN)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class DeviceStoreError(ValueError):
    code = "invalid_device"


class DeviceExists(DeviceStoreError):
    code = "device_exists"


class DeviceNotFound(DeviceStoreError):
    code = "device_not_found"


def check_hardware_class(name: str) -> str:
    if name not in PROFILES:
        raise DeviceStoreError(f"unknown hardware class {name!r}; known: {', '.join(sorted(PROFILES))}")
    return name


def check_tags(tags: Mapping[str, str], *, max_tags: int) -> dict[str, str]:
    if len(tags) > max_tags:
        raise DeviceStoreError(f"{len(tags)} tags given, at most {max_tags} allowed per device")
    for key, value in tags.items():
        if not isinstance(key, str) or not _TAG_KEY_RE.fullmatch(key):
            raise DeviceStoreError(f"tag key {key!r} must match {TAG_KEY_PATTERN}")
        if not isinstance(value, str) or len(value) > TAG_VALUE_MAX_LEN or _CONTROL_RE.search(value):
            raise DeviceStoreError(
                f"tag {key!r}: value must be a string of at most {TAG_VALUE_MAX_LEN} printable characters"
            )
    return dict(tags)


@dataclass(frozen=True)
class Provisioned:
    device: Device
    secret: str  # shown once to the operator, never stored


def provision(
    session: Session,
    *,
    device_id: str,
    hardware_class: str,
    tags: Mapping[str, str],
    max_tags: int,
    iterations: int,
    secret_bytes: int = 32,
) -> Provisioned:
    validate_device_id(device_id)
    check_hardware_class(hardware_class)
    clean_tags = check_tags(tags, max_tags=max_tags)
    if session.get(Device, device_id) is not None:
        raise DeviceExists(f"device {device_id!r} already exists")
    secret = new_secret(secret_bytes)
    device = Device(
        id=device_id,
        hardware_class=hardware_class,
        tags=clean_tags,
        mqtt_password_hash=hash_device_secret(secret, iterations=iterations),
    )
    session.add(device)
    session.flush()
    return Provisioned(device=device, secret=secret)


def get(session: Session, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise DeviceNotFound(f"device {device_id!r} not found")
    return device


def list_devices(
    session: Session,
    *,
    hardware_class: str | None = None,
    tags: Mapping[str, str] | None = None,
    limit: int,
    offset: int,
) -> tuple[list[Device], int]:
    """Devices ordered by id, filtered by hardware class and by every ``key=value`` tag given."""
    conditions = []
    if hardware_class is not None:
        conditions.append(Device.hardware_class == hardware_class)
    for key, value in (tags or {}).items():
        # JSON path extraction: json_extract on SQLite, ->> on PostgreSQL.
        conditions.append(Device.tags[key].as_string() == value)
    total = session.scalar(select(func.count()).select_from(Device).where(*conditions)) or 0
    rows = session.scalars(select(Device).where(*conditions).order_by(Device.id).limit(limit).offset(offset))
    return list(rows), total


def patch_tags(
    session: Session, device_id: str, changes: Mapping[str, str | None], *, max_tags: int
) -> Device:
    """Merge-patch the tags (RFC 7396 style): a value sets the tag, ``None`` removes it."""
    device = get(session, device_id)
    merged = dict(device.tags)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    device.tags = check_tags(merged, max_tags=max_tags)
    session.flush()
    return device


def rotate_credential(
    session: Session, device_id: str, *, iterations: int, secret_bytes: int = 32
) -> Provisioned:
    device = get(session, device_id)
    secret = new_secret(secret_bytes)
    device.mqtt_password_hash = hash_device_secret(secret, iterations=iterations)
    session.flush()
    return Provisioned(device=device, secret=secret)


def delete(session: Session, device_id: str) -> None:
    session.delete(get(session, device_id))
    session.flush()
