"""Alert list filters, responses and operator actions."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field

from fleet_server.api.schemas.common import PageQuery, SafeText, StrictModel
from fleet_server.api.schemas.telemetry import ModelNameParam
from fleet_server.rollouts.alerts import RESPONSE_TIME

SeverityName = Literal["P0", "P1", "P2", "P3"]
AlertStateName = Literal["open", "acknowledged", "resolved"]


class AlertQueryParams(PageQuery):
    severity: SeverityName | None = None
    state: AlertStateName | None = None
    model: ModelNameParam | None = None
    code: SafeText(64, 1) | None = None  # type: ignore[valid-type]


class AlertAction(StrictModel):
    note: SafeText(1000) | None = None  # type: ignore[valid-type]


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    severity: SeverityName
    code: str
    title: str
    model_name: str | None
    model_version: str | None
    cohort: str | None
    rollout_id: str | None
    evidence: dict[str, Any]
    state: AlertStateName
    count: int
    created_at: dt.datetime
    last_seen_at: dt.datetime
    acknowledged_by: str | None
    resolved_at: dt.datetime | None
    note: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def response_time(self) -> str:
        """The chapter's response time for the severity (P0 15 min ... P3 24 h)."""
        return RESPONSE_TIME[self.severity]
