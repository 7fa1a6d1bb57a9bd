"""What every dashboard page shares: templates, the session-based principal, role checks, HTML errors.

Dashboard routes use :class:`DashboardRoute`, which turns refusals and invalid input into HTML error pages
(the JSON error shape is for the REST API). The principal is put on ``request.state`` exactly as the REST
dependencies do, so the audit middleware records dashboard actions under the operator's token name.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from fleet_server.api.deps import SessionDep
from fleet_server.auth import OperatorPrincipal, Role
from fleet_server.dashboard.session import (
    COOKIE_NAME,
    DashboardSession,
    decode_cookie,
    load_or_create_secret,
    principal_for,
)
from fleet_server.settings import Settings

PREFIX = "/dashboard"
STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(__file__).parent / "templates"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def _fmt_time(value: dt.datetime | float | int | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, float)):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1):
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def _fmt_age(value: dt.datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((dt.datetime.now(dt.UTC) - value).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 172800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


templates.env.filters["when"] = _fmt_time
templates.env.filters["num"] = _fmt_num
templates.env.filters["age"] = _fmt_age
templates.env.globals["svg"] = Markup  # plots are built escaped by svg_plots; mark them safe explicitly


class DashboardError(Exception):
    """Rendered as an HTML error page with this status."""

    def __init__(self, status_code: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.message = message


class LoginRequired(Exception):
    """No valid session: a page load is sent to the login page, anything else gets a 401 page."""


def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    # Remembered for the audit entry of this request (same key the JSON error handler uses).
    request.state.error = {"code": title.lower().replace(" ", "_"), "message": message}
    principal = getattr(request.state, "principal", None)
    response = templates.TemplateResponse(
        request,
        "error.html",
        {
            "status_code": status_code,
            "title": title,
            "message": message,
            "user": principal,
            "csrf": getattr(request.state, "dashboard_csrf", ""),
            "prefix": PREFIX,
            "active": "",
        },
        status_code=status_code,
    )
    return secure_headers(response)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{loc or 'request'}: {e.get('msg', '')}")
    return "; ".join(parts)


class DashboardRoute(APIRoute):
    """Route class of the dashboard: errors become HTML pages, a missing session a redirect to login."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                if request.method == "GET":
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303)
                return error_page(request, 401, "Not signed in", "Your session has ended; sign in again.")
            except DashboardError as exc:
                return error_page(request, exc.status_code, exc.title, exc.message)
            except RequestValidationError as exc:
                return error_page(request, 422, "Invalid request", _validation_message(exc))

        return route


def settings_of(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def cookie_secret(request: Request) -> bytes:
    """The signing secret, read once per app (the file lookup is not repeated on every request)."""
    secret: bytes | None = getattr(request.app.state, "dashboard_secret", None)
    if secret is None:
        secret = load_or_create_secret(settings_of(request))
        request.app.state.dashboard_secret = secret
    return secret


class Viewer:
    """The signed-in operator and their session (for the CSRF token in forms)."""

    def __init__(self, principal: OperatorPrincipal, session: DashboardSession) -> None:
        self.principal = principal
        self.session = session

    @property
    def can_operate(self) -> bool:
        return self.principal.role >= Role.operator

    @property
    def is_admin(self) -> bool:
        return self.principal.role >= Role.admin


def current_viewer(request: Request, db: SessionDep) -> Viewer:
    session = decode_cookie(request.cookies.get(COOKIE_NAME), cookie_secret(request))
    if session is None:
        raise LoginRequired
    principal = principal_for(db, session)
    if principal is None:
        db.rollback()
        raise LoginRequired
    request.state.principal = principal  # the audit middleware's actor
    request.state.dashboard_csrf = session.csrf  # error pages keep the logout button working
    return Viewer(principal, session)


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def require(viewer: Viewer, minimum: Role, what: str) -> None:
    if viewer.principal.role < minimum:
        raise DashboardError(
            403,
            "Forbidden",
            f"role {viewer.principal.role.name!r} may not {what}; needs {minimum.name!r} or higher",
        )


def render(request: Request, template: str, viewer: Viewer | None, **context: Any) -> Response:
    context.setdefault("active", template.removesuffix(".html"))
    context["user"] = viewer.principal if viewer else None
    context["can_operate"] = bool(viewer and viewer.can_operate)
    context["is_admin"] = bool(viewer and viewer.is_admin)
    context["csrf"] = viewer.session.csrf if viewer else ""
    context["prefix"] = PREFIX
    response = templates.TemplateResponse(request, template, context)
    # Pages show live fleet state: never serve them from a cache (also keeps them out of shared proxies).
    secure_headers(response)
    return response


# No script runs on these pages; inline SVG and the one stylesheet come from here; no framing (clickjacking).
_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"
)


def secure_headers(response: Response) -> Response:
    # Pages show live fleet state: never serve them from a cache (also keeps them out of shared proxies).
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
