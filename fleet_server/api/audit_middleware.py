"""Writes one audit-log row for every mutating request and every authentication/authorization refusal.

Routes name their action and target with ``deps.set_audit``; requests refused before a route ran
(401, 403, validation errors, oversized bodies) are recorded under ``"<METHOD> <route template>"``.
A pure ASGI middleware: the row is handed to the :class:`AuditWriter` thread after the response has
been sent (refused and failed requests are recorded too), and this request's task waits for the
commit without holding the event loop or a worker thread. Anonymous refusal floods are bounded
per client IP and minute (``Settings.audit_anonymous_per_minute``, see fleet_server/audit_flood.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet_server import audit
from fleet_server.api.audit_writer import AuditWriter
from fleet_server.api.deps import client_ip
from fleet_server.api.metrics import scope_route_template
from fleet_server.audit_flood import AnonymousFloodLimiter
from fleet_server.auth import DevicePrincipal, OperatorPrincipal

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _entry(request: Request, status_code: int) -> dict[str, Any]:
    state = request.scope.get("state") or {}
    principal = state.get("principal")
    if isinstance(principal, OperatorPrincipal):
        actor, kind = principal.name, "operator"
    elif isinstance(principal, DevicePrincipal):
        actor, kind = principal.device_id, "device"
    else:
        actor, kind = "anonymous", "anonymous"
    named = state.get("audit") or {}
    params = request.scope.get("path_params") or {}
    target = named.get("target") or (",".join(str(v) for v in params.values()) or None)
    details: dict[str, Any] = dict(named.get("details") or {})
    details["method"] = request.method
    details["path"] = request.url.path[:200]
    error = state.get("error")
    if error is not None and status_code >= 400:
        details["error"] = error
    return {
        "actor": actor,
        "actor_kind": kind,
        "action": named.get("action") or f"{request.method} {scope_route_template(request.scope)}",
        "target": target,
        "client_ip": client_ip(request),
        "outcome": audit.outcome_for_status(status_code),
        "status_code": status_code,
        "details": details,
    }


class AuditMiddleware:
    def __init__(self, app: ASGIApp, writer: AuditWriter) -> None:
        self.app = app
        self.writer = writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._flush_on_shutdown(receive), send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            if scope["method"] not in _SAFE_METHODS:
                await self.writer.write(_entry(Request(scope), 500))
            raise
        if status is not None and (scope["method"] not in _SAFE_METHODS or status in (401, 403)):
            await self.writer.write(_entry(Request(scope), status))

    def _flush_on_shutdown(self, receive: Receive) -> Receive:
        # Drain the writer when shutdown is announced, i.e. before the app's lifespan disposes the engine.
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.writer.aclose()
            return message

        return wrapped


def install_audit(app: FastAPI) -> None:
    settings = app.state.settings
    limiter = AnonymousFloodLimiter(settings.audit_anonymous_per_minute)
    # The session factory is looked up per batch: the app may replace it after this call.
    app.state.audit_writer = AuditWriter(lambda: app.state.session_factory(), limiter)
    app.add_middleware(AuditMiddleware, writer=app.state.audit_writer)
