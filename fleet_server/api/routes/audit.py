"""/api/v1/audit: read the audit log (admin only), newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server.api.deps import Admin, SessionDep, SettingsDep, check_limit
from fleet_server.api.errors import ERROR_RESPONSES
from fleet_server.api.schemas.audit import AuditOut, AuditQueryParams
from fleet_server.api.schemas.common import Page
from fleet_server.audit import AuditQuery, list_entries

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=ERROR_RESPONSES)


@router.get("", response_model=Page[AuditOut])
def list_audit(
    query: Annotated[AuditQueryParams, Query()], session: SessionDep, settings: SettingsDep, caller: Admin
) -> Page[AuditOut]:
    limit = check_limit(query.limit, settings)
    filters = AuditQuery(
        actor=query.actor,
        action=query.action,
        target=query.target,
        outcome=query.outcome,
        since=query.since,
        until=query.until,
    )
    rows, total = list_entries(session, filters, limit=limit, offset=query.offset)
    return Page[AuditOut].build(
        [AuditOut.model_validate(r) for r in rows], total=total, limit=limit, offset=query.offset
    )
