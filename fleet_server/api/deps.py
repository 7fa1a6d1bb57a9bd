"""Dependencies shared by the routes: settings, DB session, principal and role checks, pagination."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPBasic, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

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


# Cheap dependencies are ``async def`` on purpose: FastAPI runs every sync dependency in AnyIO's
# threadpool, and each such hop costs the event loop more than the work itself (a thread hand-off,
# a capacity limiter, a wake-up back on the loop). Only what touches the database runs on a thread.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[Session]:
    # A new Session does no I/O (it checks out a connection on first use, in a worker thread), so it
    # is made on the event loop. Closing it ends the transaction and returns the connection: on
    # PostgreSQL a network round trip, so on a thread; on SQLite a local call of microseconds, cheaper
    # than the thread hand-off, so right here.
    session: Session = request.app.state.session_factory()
    try:
        yield session
    finally:
        if session.in_transaction() and not request.app.state.settings.is_sqlite:
            await run_in_threadpool(session.close)
        else:
            session.close()


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
        session.rollback()  # give the connection back now
        raise ApiError(401, "unauthenticated", str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require_role(minimum: Role) -> Callable[..., Awaitable[OperatorPrincipal]]:
    """Dependency factory: an operator token with at least ``minimum``; devices always get 403."""

    async def dependency(
        principal: PrincipalDep, _doc: Annotated[object, Depends(_bearer_doc)] = None
    ) -> OperatorPrincipal:
        # No database work here; the session (and its connection) is closed before the refusal is
        # audited, since the audit row is written after the response (fleet_server/api/audit_writer.py).
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


async def require_device(
    principal: PrincipalDep, _doc: Annotated[object, Depends(_basic_doc)] = None
) -> DevicePrincipal:
    if not isinstance(principal, DevicePrincipal):
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
