"""Helpers for the fleet-server tests (imported by name: conftest puts this directory on sys.path)."""

from __future__ import annotations

import base64
from typing import Any


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def assert_error(response: Any, status: int, *fragments: str) -> dict[str, Any]:
    """The response is the JSON error shape with ``status`` and a message naming the problem."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return body["error"]  # type: ignore[no-any-return]
