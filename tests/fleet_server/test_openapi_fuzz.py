"""Schemathesis against the served OpenAPI document: no request, valid or not, may cause a 5xx.

Each operation gets ``MAX_EXAMPLES`` schema-conforming and ``MAX_EXAMPLES`` schema-violating requests,
sent in-process to the ASGI app with an admin token (device routes: a device's Basic credentials).
Derandomized so that CI is reproducible; widen locally with TINYFLEET_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fleet_api_support import basic, bearer
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

MAX_EXAMPLES = int(os.environ.get("TINYFLEET_FUZZ_EXAMPLES", "25"))


def test_no_5xx_for_any_generated_request(
    app: FastAPI, tokens: dict[str, str], provision: Callable[..., dict[str, Any]]
) -> None:
    device_secret = provision("fuzz-device", "pi-zero-2w", site="lab")["credential"]["password"]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/api/v1/devices", "/api/v1/devices/{device_id}", "/api/v1/tokens", "/api/v1/audit"} <= paths

    server_errors: list[str] = []
    calls = 0
    no_negative: list[str] = []
    for operation in operations:
        device_route = operation.path.startswith("/api/v1/device/")
        auth = basic("fuzz-device", device_secret) if device_route else bearer(tokens["admin"])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(mode, headers=auth)

            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                nonlocal calls
                response = case.call()
                calls += 1
                if response.status_code >= 500:
                    server_errors.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: "
                        f"{response.text[:300]} (query={case.query}, body={case.body!r:.200})"
                    )
                else:
                    # Every error is the JSON error shape (Prometheus text on /metrics excepted).
                    if response.status_code >= 400:
                        assert set(response.json()) == {"error"}, response.text

            try:
                run()
            except Unsatisfiable:
                # No parameters and no body: nothing that could violate the schema (e.g. /healthz).
                assert mode is GenerationMode.NEGATIVE, operation.path
                no_negative.append(operation.path)
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
