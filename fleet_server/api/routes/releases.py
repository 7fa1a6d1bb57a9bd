"""/api/v1/releases: create (sign) a release, list, show (manifest, files, deltas, decisions), withdraw."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from fleet_server.api.deps import Admin, Operator, SessionDep, SettingsDep, Viewer, check_limit, set_audit
from fleet_server.api.errors import ERROR_RESPONSES, ErrorResponse, service_error
from fleet_server.api.schemas.common import Page
from fleet_server.api.schemas.releases import (
    DeltaDecisionOut,
    ReleaseCreate,
    ReleaseDetail,
    ReleaseFileOut,
    ReleaseIdField,
    ReleaseListQuery,
    ReleaseOut,
)
from fleet_server.db import Release
from fleet_server.releases import service
from fleet_server.releases.commands import DOWNLOAD_PREFIX
from fleet_server.releases.errors import ReleaseServiceError
from fleet_server.settings import Settings

router = APIRouter(prefix="/api/v1/releases", tags=["releases"], responses=ERROR_RESPONSES)
ReleaseIdPath = Annotated[ReleaseIdField, Path(description='Release id, "<model>-<counter>"')]
_NOT_FOUND = {404: {"model": ErrorResponse, "description": "No such release"}}
_CONFLICT = {409: {"model": ErrorResponse, "description": "Conflicts with the current state"}}


def release_detail(settings: Settings, row: Release) -> ReleaseDetail:
    files = service.stored_files(settings, row)
    return ReleaseDetail(
        **ReleaseOut.model_validate(row).model_dump(),
        manifest=service.manifest_document(settings, row),
        files=[
            ReleaseFileOut(
                name=name,
                sha256=f.sha256,
                length=f.length,
                download_path=f"{DOWNLOAD_PREFIX}/{row.id}/{name}",
            )
            for name, f in sorted(files.items())
        ],
        decisions=[DeltaDecisionOut.model_validate(d) for d in service.delta_decisions(settings, row)],
    )


@router.post("", status_code=201, response_model=ReleaseDetail, responses={**_NOT_FOUND, **_CONFLICT})
def create_release(
    body: ReleaseCreate, request: Request, session: SessionDep, settings: SettingsDep, caller: Operator
) -> ReleaseDetail:
    """Sign a release of a converted model version (deltas from the versions still in the field)."""
    set_audit(
        request,
        "release.create",
        f"{body.model} {body.version}",
        variant=body.variant,
        hardware_classes=body.hardware_classes,
    )
    try:
        row = service.create_release(
            session,
            settings,
            model_name=body.model,
            version=body.version,
            variant=body.variant,
            hardware_classes=body.hardware_classes,
            actor=caller.name,
            expires_in=timedelta(days=body.expires_in_days) if body.expires_in_days else None,
        )
        set_audit(
            request,
            "release.create",
            row.id,
            variant=body.variant,
            hardware_classes=body.hardware_classes,
            key_id=row.key_id,
            deltas=len(row.deltas),
        )
        return release_detail(settings, row)
    except ReleaseServiceError as exc:
        session.rollback()
        raise service_error(exc) from None


@router.get("", response_model=Page[ReleaseOut])
def list_releases(
    query: Annotated[ReleaseListQuery, Query()], session: SessionDep, settings: SettingsDep, caller: Viewer
) -> Page[ReleaseOut]:
    """Releases ordered by model, newest counter first; filter by model and state."""
    limit = check_limit(query.limit, settings)
    rows, total = service.list_releases(
        session, model_name=query.model, state=query.state, limit=limit, offset=query.offset
    )
    return Page[ReleaseOut].build(
        [ReleaseOut.model_validate(r) for r in rows], total=total, limit=limit, offset=query.offset
    )


@router.get("/{release_id}", response_model=ReleaseDetail, responses=_NOT_FOUND)
def get_release(
    release_id: ReleaseIdPath, session: SessionDep, settings: SettingsDep, caller: Viewer
) -> ReleaseDetail:
    try:
        return release_detail(settings, service.get_release(session, release_id))
    except ReleaseServiceError as exc:
        raise service_error(exc) from None


@router.post("/{release_id}/withdraw", response_model=ReleaseOut, responses={**_NOT_FOUND, **_CONFLICT})
def withdraw_release(
    release_id: ReleaseIdPath, request: Request, session: SessionDep, caller: Admin
) -> ReleaseOut:
    """Withdraw a release: devices can no longer download its files (running rollouts must stop)."""
    set_audit(request, "release.withdraw", release_id)
    try:
        row = service.withdraw_release(session, release_id)
    except ReleaseServiceError as exc:
        session.rollback()
        raise service_error(exc) from None
    session.commit()
    return ReleaseOut.model_validate(row)
