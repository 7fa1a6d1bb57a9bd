"""/api/v1/devices: provision, list, get, patch tags, rotate credential, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from fleet_server.api.deps import Operator, SessionDep, SettingsDep, Viewer, check_limit, set_audit
from fleet_server.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from fleet_server.api.schemas.common import Page
from fleet_server.api.schemas.devices import (
    DeviceCreate,
    DeviceCredential,
    DeviceId,
    DeviceListQuery,
    DeviceOut,
    DevicePatch,
    DeviceProvisioned,
)
from fleet_server.db import device_store
from fleet_server.db.device_store import DeviceExists, DeviceNotFound, DeviceStoreError
from fleet_server.db.devices import Device
from fleet_server.settings import Settings

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], responses=ERROR_RESPONSES)
DeviceIdPath = Annotated[DeviceId, Path(description="Device id")]
_NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such device"}}


def _store_error(exc: DeviceStoreError) -> ApiError:
    if isinstance(exc, DeviceNotFound):
        return ApiError(404, exc.code, str(exc))
    if isinstance(exc, DeviceExists):
        return ApiError(409, exc.code, str(exc))
    return ApiError(422, exc.code, str(exc))


def _credential(device: Device, secret: str, settings: Settings) -> DeviceCredential:
    return DeviceCredential(
        username=device.id, password=secret, mqtt_host=settings.mqtt_host, mqtt_port=settings.mqtt_port
    )


def _parse_tag_filters(raw: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ApiError(422, "validation_error", f"tag filter {item!r} must look like key=value")
        tags[key] = value
    return tags


@router.post("", status_code=201, response_model=DeviceProvisioned, responses={409: {"model": ErrorResponse}})
def provision_device(
    body: DeviceCreate, request: Request, session: SessionDep, settings: SettingsDep, caller: Operator
) -> DeviceProvisioned:
    """Register a device and return its credential (the secret is shown only here)."""
    set_audit(request, "device.provision", body.id, hardware_class=body.hardware_class, tags=body.tags)
    try:
        done = device_store.provision(
            session,
            device_id=body.id,
            hardware_class=body.hardware_class,
            tags=body.tags,
            max_tags=settings.max_tags_per_device,
            iterations=settings.device_credential_iterations,
            secret_bytes=settings.token_bytes,
        )
    except DeviceStoreError as exc:
        raise _store_error(exc) from None
    session.commit()
    return DeviceProvisioned(
        device=DeviceOut.model_validate(done.device),
        credential=_credential(done.device, done.secret, settings),
    )


@router.get("", response_model=Page[DeviceOut])
def list_devices(
    query: Annotated[DeviceListQuery, Query()], session: SessionDep, settings: SettingsDep, caller: Viewer
) -> Page[DeviceOut]:
    """Devices ordered by id; filter by hardware class and by tags (``tag=key=value``, repeatable)."""
    limit = check_limit(query.limit, settings)
    rows, total = device_store.list_devices(
        session,
        hardware_class=query.hardware_class,
        tags=_parse_tag_filters(query.tag),
        limit=limit,
        offset=query.offset,
    )
    return Page[DeviceOut].build(
        [DeviceOut.model_validate(r) for r in rows], total=total, limit=limit, offset=query.offset
    )


@router.get("/{device_id}", response_model=DeviceOut, responses=_NOT_FOUND)
def get_device(device_id: DeviceIdPath, session: SessionDep, caller: Viewer) -> DeviceOut:
    try:
        return DeviceOut.model_validate(device_store.get(session, device_id))
    except DeviceStoreError as exc:
        raise _store_error(exc) from None


@router.patch("/{device_id}", response_model=DeviceOut, responses=_NOT_FOUND)
def patch_device(
    device_id: DeviceIdPath,
    body: DevicePatch,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: Operator,
) -> DeviceOut:
    """Change tags (merge patch). Other fields are reported by the device, not set by operators."""
    set_audit(request, "device.update_tags", device_id, tags=body.tags)
    try:
        device = device_store.patch_tags(session, device_id, body.tags, max_tags=settings.max_tags_per_device)
    except DeviceStoreError as exc:
        raise _store_error(exc) from None
    session.commit()
    return DeviceOut.model_validate(device)


@router.post("/{device_id}/credential", response_model=DeviceCredential, responses=_NOT_FOUND)
def rotate_device_credential(
    device_id: DeviceIdPath, request: Request, session: SessionDep, settings: SettingsDep, caller: Operator
) -> DeviceCredential:
    """Issue a new device secret; the old one stops working (HTTP at once, MQTT when the password file
    is next written)."""
    set_audit(request, "device.rotate_credential", device_id)
    try:
        done = device_store.rotate_credential(
            session,
            device_id,
            iterations=settings.device_credential_iterations,
            secret_bytes=settings.token_bytes,
        )
    except DeviceStoreError as exc:
        raise _store_error(exc) from None
    session.commit()
    return _credential(done.device, done.secret, settings)


@router.delete("/{device_id}", status_code=204, response_class=Response, responses=_NOT_FOUND)
def delete_device(
    device_id: DeviceIdPath, request: Request, session: SessionDep, caller: Operator
) -> Response:
    set_audit(request, "device.delete", device_id)
    try:
        device_store.delete(session, device_id)
    except DeviceStoreError as exc:
        raise _store_error(exc) from None
    session.commit()
    return Response(status_code=204)
