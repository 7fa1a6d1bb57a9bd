"""Sign in with an operator API token (checked by fleet_server.auth), sign out.

The login form is protected against login CSRF with a double-submit token: a short-lived signed cookie
and the same value in the form. After sign-in the session cookie carries its own CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from fleet_server.api.deps import SessionDep, set_audit
from fleet_server.auth import AuthError, authenticate
from fleet_server.dashboard.session import COOKIE_NAME, csrf_ok, encode_cookie, new_session
from fleet_server.dashboard.web import (
    PREFIX,
    DashboardError,
    DashboardRoute,
    ViewerDep,
    cookie_secret,
    secure_headers,
    settings_of,
    templates,
)
from fleet_server.db import ApiToken

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)

LOGIN_COOKIE = "tinyfleet_login"
_LOGIN_MAX_AGE_S = 900


def _safe_next(target: str | None) -> str:
    """Only a dashboard path of this server (no scheme, no host, no '//' tricks) is a redirect target."""
    if (
        not target
        or not target.startswith(PREFIX)
        or "//" in target
        or "\\" in target
        or any(ord(c) < 32 for c in target)
    ):
        return PREFIX
    return target


def _login_token(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, b"login:" + nonce.encode(), hashlib.sha256).hexdigest()


def _login_form(request: Request, next_path: str, *, error: str = "", status_code: int = 200) -> Response:
    nonce = secrets.token_urlsafe(18)
    response = templates.TemplateResponse(
        request,
        "login.html",
        {
            "next": next_path,
            "error": error,
            "login_csrf": _login_token(cookie_secret(request), nonce),
            "user": None,
            "prefix": PREFIX,
            "active": "login",
            "csrf": "",
        },
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=_LOGIN_MAX_AGE_S,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=settings_of(request).dashboard_cookie_secure,
    )
    return secure_headers(response)


@router.get("/login")
def login_page(request: Request, next: Annotated[str | None, Query(max_length=500)] = None) -> Response:
    return _login_form(request, _safe_next(next))


@router.post("/login")
def login(
    request: Request,
    db: SessionDep,
    token: Annotated[str, Form(min_length=1, max_length=300)],
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = PREFIX,
) -> Response:
    next_path = _safe_next(next)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not csrf or not hmac.compare_digest(csrf, _login_token(cookie_secret(request), nonce)):
        raise DashboardError(403, "Forbidden", "the sign-in form expired or did not come from this server")
    try:
        principal = authenticate(db, f"Bearer {token.strip()}")
    except AuthError:
        db.rollback()
        return _login_form(
            request,
            next_path,
            error="That token is not valid (unknown, revoked or mistyped).",
            status_code=401,
        )
    if principal.kind != "operator":  # authenticate() only yields an operator for a Bearer token
        raise DashboardError(403, "Forbidden", "device credentials cannot sign in")
    row = db.get(ApiToken, principal.token_id)
    assert row is not None
    settings = settings_of(request)
    session = new_session(row, max_age_s=settings.dashboard_session_max_age_s)
    request.state.principal = principal
    set_audit(request, "dashboard.login", principal.name, role=principal.role.name)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        encode_cookie(session, cookie_secret(request)),
        max_age=settings.dashboard_session_max_age_s,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=settings.dashboard_cookie_secure,
    )
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


@router.post("/logout")
def logout(request: Request, viewer: ViewerDep, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    if not csrf_ok(viewer.session, csrf):
        raise DashboardError(403, "Forbidden", "missing or wrong CSRF token")
    set_audit(request, "dashboard.logout", viewer.principal.name)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path=PREFIX)
    return response
