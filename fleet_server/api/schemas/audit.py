"""Audit log response model and list filters."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from fleet_server.api.schemas.common import PageQuery, SafeText, UtcDatetime

OutcomeName = Literal["ok", "denied", "rejected", "error"]


class AuditQueryParams(PageQuery):
    actor: SafeText(100, 1) | None = None  # type: ignore[valid-type]
    action: SafeText(100, 1) | None = None  # type: ignore[valid-type]
    target: SafeText(200, 1) | None = None  # type: ignore[valid-type]
    outcome: OutcomeName | None = None
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: dt.datetime
    actor: str
    actor_kind: str
    action: str
    target: str | None
    client_ip: str | None
    outcome: OutcomeName
    status_code: int | None
    details: dict[str, Any]
