"""/api/v1/device/*: routes for devices themselves (device credentials only, never operator tokens).

Artifact download with HTTP Range comes here next; for now a device can read its own record.
"""

from __future__ import annotations

from fastapi import APIRouter

from fleet_server.api.deps import DeviceCaller, SessionDep
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.api.schemas.devices import DeviceOut
from fleet_server.db import device_store

router = APIRouter(prefix="/api/v1/device", tags=["device"], responses=ERROR_RESPONSES)


@router.get("/self", response_model=DeviceOut)
def read_self(session: SessionDep, caller: DeviceCaller) -> DeviceOut:
    """The calling device's own record."""
    return DeviceOut.model_validate(device_store.get(session, caller.device_id))
