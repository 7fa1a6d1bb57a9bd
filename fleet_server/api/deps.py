"""Dependencies shared by the routes: settings, DB session, principal and role checks, pagination."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPBasic, HTTPBearer
from sqlalchemy.orm import Session

from fleet_server.api.errors import ApiError
from fleet_server.auth import AuthError, DevicePrincipal, OperatorPrincipal, Principal, Role, authenticate
from fleet_server.settings import Settings


class _DocBearer(HTTPBearer):
    """Documents the scheme in OpenAPI only; the header itself is parsed by fleet_server.auth."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


class _DocBasic(HTTPBasic):
    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


_bearer_doc = _DocBearer(auto_error=False, description="Operator API token (tfo_...)")
_basic_doc = _DocBasic(auto_error=False, description="Device id and device secret (same as MQTT)")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


def client_ip(request: Request) -> str | None:
    settings: Settings = request.app.state.settings
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()[:64]
    return request.client.host if request.client else None


def get_principal(
    request: Request,
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    try:
        principal = authenticate(session, authorization)
    except AuthError as exc:
        session.rollback()  # give the connection back now; the audit writer needs one too
        raise ApiError(401, "unauthenticated", str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_role(minimum: Role) -> Callable[..., OperatorPrincipal]:
    """Dependency factory: an operator token with at least ``minimum``; devices always get 403."""

    def dependency(
        principal: PrincipalDep, session: SessionDep, _doc: Annotated[object, Depends(_bearer_doc)] = None
    ) -> OperatorPrincipal:
        if not isinstance(principal, OperatorPrincipal) or principal.role < minimum:
            session.rollback()  # release the connection before the refusal is audited
        if not isinstance(principal, OperatorPrincipal):
            raise ApiError(403, "forbidden", "device credentials cannot call operator routes")
        if principal.role < minimum:
            raise ApiError(
                403,
                "forbidden",
                f"role {principal.role.name!r} may not do this; needs {minimum.name!r} or higher",
            )
        return principal

    return dependency


def require_device(
    principal: PrincipalDep, session: SessionDep, _doc: Annotated[object, Depends(_basic_doc)] = None
) -> DevicePrincipal:
    if not isinstance(principal, DevicePrincipal):
        session.rollback()
        raise ApiError(403, "forbidden", "this route is for device credentials only")
    return principal


Viewer = Annotated[OperatorPrincipal, Depends(require_role(Role.viewer))]
Operator = Annotated[OperatorPrincipal, Depends(require_role(Role.operator))]
Admin = Annotated[OperatorPrincipal, Depends(require_role(Role.admin))]
DeviceCaller = Annotated[DevicePrincipal, Depends(require_device)]


def check_limit(limit: int | None, settings: Settings) -> int:
    """Resolve a page size against the configured bounds (the schema already caps it at the hard max)."""
    if limit is None:
        return settings.page_size_default
    if limit > settings.page_size_max:
        raise ApiError(
            422,
            "validation_error",
            f"limit {limit} exceeds the maximum page size {settings.page_size_max}",
            [
                {
                    "loc": "query.limit",
                    "msg": f"must be <= {settings.page_size_max}",
                    "type": "less_than_equal",
                }
            ],
        )
    return limit


def set_audit(request: Request, action: str, target: str | None = None, **details: object) -> None:
    """Name the action a route performed (and safe details: never secrets) for the audit log."""
    request.state.audit = {"action": action, "target": target, "details": details}
