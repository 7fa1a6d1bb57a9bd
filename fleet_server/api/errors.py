"""One error shape everywhere: ``{"error": {"code": str, "message": str, "details": object}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleet_server.service_errors import ServiceError

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
}


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """What every non-2xx response carries (documented in OpenAPI)."""

    error: ErrorInfo


class ApiError(Exception):
    """Raised by routes and dependencies; rendered as the JSON error shape."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def service_error(exc: ServiceError) -> ApiError:
    """A service's named refusal as the API error it stands for (its status, code, message, details)."""
    return ApiError(exc.status_code, exc.code, exc.message, exc.details)


def error_response(
    request: Request, status_code: int, code: str, message: str, details: Any = None, headers: Any = None
) -> JSONResponse:
    # Remembered for the audit log entry of this request.
    request.state.error = {"code": code, "message": message}
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status_code, headers=headers)


def _loc(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Drop "input" (may be huge, binary, or a secret) and "ctx" (may hold exception objects).
    return [
        {"loc": _loc(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = _validation_details(exc)
    shown = "; ".join(f"{d['loc']}: {d['msg']}" for d in details[:3])
    more = f" (+{len(details) - 3} more)" if len(details) > 3 else ""
    return error_response(request, 422, "validation_error", f"invalid request: {shown}{more}", details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    details = getattr(exc, "error_details", None)  # e.g. body_limit.BodyTooLarge: the limit
    return error_response(request, exc.status_code, code, message, details, getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the server log (uvicorn); the client learns only that it failed.
    return error_response(request, 500, "internal_error", "internal server error", None)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


# Response documentation reused by every route.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid credentials"},
    403: {"model": ErrorResponse, "description": "Credentials valid but not allowed here"},
    422: {"model": ErrorResponse, "description": "Invalid input"},
}
