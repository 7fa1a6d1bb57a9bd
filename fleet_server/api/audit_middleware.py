"""Writes one audit-log row for every mutating request and every authentication/authorization refusal.

Routes name their action and target with ``deps.set_audit``; requests refused before a route ran
(401, 403, validation errors) are recorded under ``"<METHOD> <route template>"``. The row is written in
its own session after the response is produced, so refused and failed requests are recorded too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from fleet_server import audit
from fleet_server.api.deps import client_ip
from fleet_server.api.metrics import route_template
from fleet_server.auth import DevicePrincipal, OperatorPrincipal

log = logging.getLogger("tinyfleet.audit")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _entry(request: Request, status_code: int) -> dict[str, Any]:
    principal = getattr(request.state, "principal", None)
    if isinstance(principal, OperatorPrincipal):
        actor, kind = principal.name, "operator"
    elif isinstance(principal, DevicePrincipal):
        actor, kind = principal.device_id, "device"
    else:
        actor, kind = "anonymous", "anonymous"
    named = getattr(request.state, "audit", None) or {}
    params = request.scope.get("path_params") or {}
    target = named.get("target") or (",".join(str(v) for v in params.values()) or None)
    details: dict[str, Any] = dict(named.get("details") or {})
    details["method"] = request.method
    details["path"] = request.url.path[:200]
    error = getattr(request.state, "error", None)
    if error is not None and status_code >= 400:
        details["error"] = error
    return {
        "actor": actor,
        "actor_kind": kind,
        "action": named.get("action") or f"{request.method} {route_template(request)}",
        "target": target,
        "client_ip": client_ip(request),
        "outcome": audit.outcome_for_status(status_code),
        "status_code": status_code,
        "details": details,
    }


def install_audit(app: FastAPI) -> None:
    def write(entry: dict[str, Any]) -> None:
        try:
            with app.state.session_factory() as session:
                audit.record(session, **entry)
                session.commit()
        except SQLAlchemyError:
            # The response already went out; losing the row is logged loudly rather than hidden.
            log.exception("could not write audit entry for %s %s", entry["action"], entry["target"])

    @app.middleware("http")
    async def audit_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        try:
            response = await call_next(request)
        except Exception:
            if request.method not in _SAFE_METHODS:
                await run_in_threadpool(write, _entry(request, 500))
            raise
        if request.method not in _SAFE_METHODS or response.status_code in (401, 403):
            await run_in_threadpool(write, _entry(request, response.status_code))
        return response
