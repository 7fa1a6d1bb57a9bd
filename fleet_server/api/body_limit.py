"""Request body size limit: a pure ASGI middleware, with larger limits for chosen path prefixes.

``Settings.max_body_bytes`` applies everywhere; ``Settings.body_limit_overrides`` maps path prefixes
(``*`` matches one path segment) to their own limit, and the model upload route
(``/api/v1/models/*/versions``) gets ``Settings.model_upload_max_bytes`` unless overridden there.
A declared ``Content-Length`` over the limit is refused with 413 before the app runs or a byte of the
body is read; a chunked body is counted as it streams in and refused as soon as it passes the limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MODEL_UPLOAD_PREFIX = "/api/v1/models/*/versions"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit. An HTTPException so that FastAPI's
    body parsing re-raises it (anything else becomes a 400) and the JSON error handler renders it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes for this path")
        self.error_details = {"limit_bytes": limit}


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, default_limit: int, overrides: Mapping[str, int]) -> None:
        self.app = app
        self.default_limit = default_limit
        # Longest (most specific) prefix first.
        self.overrides = sorted(
            ((_segments(prefix), limit) for prefix, limit in overrides.items()), key=lambda p: -len(p[0])
        )

    def limit_for(self, path: str) -> int:
        parts = _segments(path)
        for prefix, limit in self.overrides:
            if len(parts) >= len(prefix) and all(p in ("*", s) for p, s in zip(prefix, parts, strict=False)):
                return limit
        return self.default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, send, BodyTooLarge(limit))
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_and_note(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, send_and_note)
        except BodyTooLarge as exc:  # raised where no exception handler caught it (e.g. a raw ASGI app)
            if started:
                raise
            await self._refuse(scope, send, exc)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, exc: BodyTooLarge) -> None:
        # Remembered for the audit row of this request, as error_response does.
        scope.setdefault("state", {})["error"] = {"code": "payload_too_large", "message": exc.detail}
        body: dict[str, Any] = {
            "error": {"code": "payload_too_large", "message": exc.detail, "details": exc.error_details}
        }
        # The unread body stays on the connection: close it rather than parse it as the next request.
        response = JSONResponse(body, status_code=413, headers={"Connection": "close"})
        await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def install_body_limit(app: FastAPI) -> None:
    """Add the middleware (call before install_audit, so that refusals are audited)."""
    settings = app.state.settings
    overrides = {MODEL_UPLOAD_PREFIX: settings.model_upload_max_bytes, **settings.body_limit_overrides}
    app.add_middleware(BodyLimitMiddleware, default_limit=settings.max_body_bytes, overrides=overrides)
