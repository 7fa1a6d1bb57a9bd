"""/api/v1/tokens: operator API tokens (admin only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import func, select

from fleet_server.api.deps import Admin, SessionDep, SettingsDep, check_limit, set_audit
from fleet_server.api.errors import ERROR_RESPONSES, ApiError, ErrorResponse
from fleet_server.api.schemas.common import MAX_INT_ID, Page, PageQuery
from fleet_server.api.schemas.tokens import TokenCreate, TokenIssued, TokenOut
from fleet_server.auth import Role, issue_token
from fleet_server.db import ApiToken
from fleet_server.db.base import utcnow

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"], responses=ERROR_RESPONSES)
TokenIdPath = Annotated[int, Path(ge=1, le=MAX_INT_ID)]


@router.post("", status_code=201, response_model=TokenIssued, responses={409: {"model": ErrorResponse}})
def create_token(
    body: TokenCreate, request: Request, session: SessionDep, settings: SettingsDep, caller: Admin
) -> TokenIssued:
    """Create a token; its secret appears only in this response."""
    set_audit(request, "token.create", body.name, role=body.role)
    try:
        issued = issue_token(
            session,
            name=body.name,
            role=Role[body.role],
            created_by=caller.name,
            n_bytes=settings.token_bytes,
        )
    except ValueError as exc:
        raise ApiError(409, "token_exists", str(exc)) from None
    session.commit()
    return TokenIssued(token=TokenOut.model_validate(issued.row), secret=issued.secret)


@router.get("", response_model=Page[TokenOut])
def list_tokens(
    query: Annotated[PageQuery, Query()], session: SessionDep, settings: SettingsDep, caller: Admin
) -> Page[TokenOut]:
    limit = check_limit(query.limit, settings)
    total = session.scalar(select(func.count()).select_from(ApiToken)) or 0
    rows = session.scalars(select(ApiToken).order_by(ApiToken.id).limit(limit).offset(query.offset))
    items = [TokenOut.model_validate(r) for r in rows]
    return Page[TokenOut].build(items, total=total, limit=limit, offset=query.offset)


@router.delete(
    "/{token_id}", status_code=204, response_class=Response, responses={404: {"model": ErrorResponse}}
)
def revoke_token(token_id: TokenIdPath, request: Request, session: SessionDep, caller: Admin) -> Response:
    """Revoke a token (kept for the audit trail, no longer accepted)."""
    set_audit(request, "token.revoke", str(token_id))
    row = session.get(ApiToken, token_id)
    if row is None:
        raise ApiError(404, "token_not_found", f"token {token_id} not found")
    if row.id == caller.token_id:
        raise ApiError(409, "conflict", "refusing to revoke the token making this request")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return Response(status_code=204)
