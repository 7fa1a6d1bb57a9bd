"""Schemathesis against the served OpenAPI document: no request, valid or not, may cause a 5xx.

Each operation gets ``MAX_EXAMPLES`` schema-conforming and ``MAX_EXAMPLES`` schema-violating requests,
sent in-process to the ASGI app with an admin token (device routes: a device's Basic credentials).
Derandomized so that CI is reproducible; widen locally with TINYFLEET_FUZZ_EXAMPLES.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fleet_api_support import basic, bearer
from openapi_fuzz_support import fuzz_operations


def test_no_5xx_for_any_generated_request(
    app: FastAPI, tokens: dict[str, str], provision: Callable[..., dict[str, Any]]
) -> None:
    device_secret = provision("fuzz-device", "pi-zero-2w", site="lab")["credential"]["password"]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/api/v1/devices", "/api/v1/devices/{device_id}", "/api/v1/tokens", "/api/v1/audit"} <= paths

    def headers_for(operation: Any) -> dict[str, str]:
        if operation.path.startswith("/api/v1/device/"):
            return basic("fuzz-device", device_secret)
        return bearer(tokens["admin"])

    report = fuzz_operations(operations, headers_for)
    calls, no_negative, server_errors = report.calls, report.no_negative, report.server_errors
    assert calls >= len(operations) * 2, calls
    assert "/api/v1/devices" not in no_negative
    assert not server_errors, "\n".join(server_errors[:10])


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
def test_openapi_is_served(app: FastAPI, path: str) -> None:
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        r = client.get(path)
    assert r.status_code == 200
    if path == "/openapi.json":
        doc = r.json()
        assert set(doc["components"]["securitySchemes"]) == {"_DocBearer", "_DocBasic"}
        assert "ErrorResponse" in doc["components"]["schemas"]
