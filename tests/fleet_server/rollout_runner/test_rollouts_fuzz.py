"""Schemathesis on the /api/v1/rollouts operations only (valid and schema-violating requests, a rollout
and its release present): no 5xx, every error in the JSON error shape."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fleet_api_support import bearer
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from runner_support import add_release
from schemathesis import GenerationMode

from fleet_server.rollout_runner import service

MAX_EXAMPLES = int(os.environ.get("TINYFLEET_FUZZ_EXAMPLES", "25"))


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
    errors: list[str] = []
    calls = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(mode, headers=bearer(tokens["admin"]))

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
                    errors.append(
                        f"{case.method} {case.formatted_path} -> {response.text[:300]} {case.body!r:.200}"
                    )
                elif response.status_code >= 400:
                    assert set(response.json()) == {"error"}, response.text

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.path
    assert calls >= len(operations)
    assert not errors, "\n".join(errors[:10])
