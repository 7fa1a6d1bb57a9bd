"""Schemathesis over a set of served operations, shared by the fuzz tests (imported by name: the fleet_server
conftest puts this directory on sys.path).

Each operation gets ``max_examples`` schema-conforming and ``max_examples`` schema-violating requests, sent
in-process to the ASGI app, derandomized so CI is reproducible. Every answer >= 400 must be the JSON error
shape; 5xx answers are collected (the caller asserts there are none)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

MAX_EXAMPLES = int(os.environ.get("TINYFLEET_FUZZ_EXAMPLES", "25"))


@dataclass
class FuzzReport:
    calls: int = 0
    server_errors: list[str] = field(default_factory=list)
    no_negative: list[str] = field(default_factory=list)  # operations nothing could violate (no params)


def fuzz_operations(
    operations: Iterable[Any], headers_for: Callable[[Any], dict[str, str]], max_examples: int = MAX_EXAMPLES
) -> FuzzReport:
    report = FuzzReport()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(mode, headers=headers_for(operation))

            @settings(
                max_examples=max_examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                response = case.call()
                report.calls += 1
                if response.status_code >= 500:
                    report.server_errors.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: "
                        f"{response.text[:300]} (query={case.query}, body={case.body!r:.200})"
                    )
                elif response.status_code >= 400:
                    assert set(response.json()) == {"error"}, response.text

            try:
                run()
            except Unsatisfiable:
                # No parameters and no body: nothing that could violate the schema (e.g. /healthz).
                assert mode is GenerationMode.NEGATIVE, operation.path
                report.no_negative.append(operation.path)
    return report
