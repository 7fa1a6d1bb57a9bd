"""Schemathesis on the /api/v1/rollouts operations only (valid and schema-violating requests, a rollout
and its release present): no 5xx, every error in the JSON error shape."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from fleet_api_support import bearer
from openapi_fuzz_support import fuzz_operations
from runner_support import add_release

from fleet_server.rollout_runner import service


@pytest.mark.slow
def test_rollout_routes_never_5xx(app: FastAPI, tokens: dict[str, str]) -> None:
    with app.state.session_factory() as s:
        add_release(s, 1)
        add_release(s, 2)
        service.create_rollout(s, service.CreateRequest(release_id="kws-2"), actor="fuzz", now=1.8e9)
        s.commit()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [r.ok() for r in schema.get_all_operations()]
    operations = [op for op in operations if op.path.startswith("/api/v1/rollouts")]
    assert len(operations) == 8, [op.path for op in operations]
    report = fuzz_operations(operations, lambda _op: bearer(tokens["admin"]))
    calls, errors = report.calls, report.server_errors
    assert calls >= len(operations)
    assert not errors, "\n".join(errors[:10])
